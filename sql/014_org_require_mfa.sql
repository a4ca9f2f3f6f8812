-- An org may require a second factor of its members (issue 15): one without answers 403
-- `mfa_enrollment_required` on the org's routes until they enrol. Read with the member's
-- permissions (access/authz.py), so a change raises the org's permission version.
alter table orgs add column require_mfa boolean not null default false;
