-- Invitations can be revoked, and die with their inviter's authority.
--
-- An invitation is open while it is neither accepted nor revoked; it is pending while
-- open and not expired. `revoked_reason` says who ended it: an administrator
-- (`revoked`), the inviter losing their authority (`inviter_removed`, `inviter_demoted`,
-- `inviter_disabled`, `inviter_not_administrator` when acceptance found it so), or a new
-- invitation of the same address (`superseded`).

alter table invitations
    add column revoked_at     timestamptz,
    add column revoked_by     uuid references users (id),
    add column revoked_reason text check (revoked_reason in (
        'revoked', 'inviter_removed', 'inviter_demoted', 'inviter_disabled',
        'inviter_not_administrator', 'superseded')),
    add constraint invitations_revoked_has_reason
        check ((revoked_at is null) = (revoked_reason is null)),
    add constraint invitations_accepted_or_revoked
        check (accepted_at is null or revoked_at is null);

-- The owner is subject to the forced row-level security too: see every org for the
-- clean-up below (transaction-local, like the runtime's scopes).
select set_config('app.platform', 'on', true);

-- Invitations sent before this migration by someone who has since stopped being an
-- administrator of the org (removed, demoted, disabled) die now, each audited.
with orphaned as (
    update invitations i
    set revoked_at = now(), revoked_reason = 'inviter_not_administrator'
    where i.accepted_at is null and i.revoked_at is null
      and not exists (select 1 from memberships m join users u on u.id = m.user_id
                      where m.org_id = i.org_id and m.user_id = i.invited_by
                        and m.org_role = 'administrator' and u.disabled_at is null)
    returning i.id, i.org_id, i.email, i.org_role, i.invited_by
)
insert into audit_log (org_id, actor_type, action, resource_type, resource_id, details)
select org_id, 'system', 'member.invitation_revoked', 'invitation', id::text,
       jsonb_build_object('email', email, 'org_role', org_role, 'invited_by', invited_by,
                          'reason', 'inviter_not_administrator')
from orphaned order by org_id, id;

-- At most one open invitation per address and org: the newest stands, the older die.
with superseded as (
    update invitations i
    set revoked_at = now(), revoked_reason = 'superseded'
    where i.accepted_at is null and i.revoked_at is null
      and exists (select 1 from invitations newer
                  where newer.org_id = i.org_id
                    and newer.email_normalized = i.email_normalized
                    and newer.accepted_at is null and newer.revoked_at is null
                    and (newer.created_at, newer.id) > (i.created_at, i.id))
    returning i.id, i.org_id, i.email, i.org_role, i.invited_by
)
insert into audit_log (org_id, actor_type, action, resource_type, resource_id, details)
select org_id, 'system', 'member.invitation_revoked', 'invitation', id::text,
       jsonb_build_object('email', email, 'org_role', org_role, 'invited_by', invited_by,
                          'reason', 'superseded')
from superseded order by org_id, id;

create unique index invitations_one_open_per_email
    on invitations (org_id, email_normalized)
    where accepted_at is null and revoked_at is null;
-- GET /org/invitations, newest first.
create index invitations_open_idx on invitations (org_id, created_at desc, id desc)
    where accepted_at is null and revoked_at is null;
-- An inviter's invitations, in one org (removal, demotion) or in all (disabling).
create index invitations_open_by_inviter_idx on invitations (invited_by, org_id)
    where accepted_at is null and revoked_at is null;
