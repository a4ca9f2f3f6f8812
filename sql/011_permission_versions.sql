-- The permission cache's version of each org lives here, changed in the transaction that
-- changes who may do what (archomata.db: the door bumps it before COMMIT, then raises
-- Redis's copy, which only caches it). A cached entry carries the version read in the
-- snapshot it was loaded from, so no cache can serve permissions older than a change
-- it has heard of, and none can miss a change: no change commits before Redis has its
-- version.
create table permission_versions (
    org_id  uuid primary key references orgs (id),
    version bigint not null check (version > 0)
);
alter table permission_versions enable row level security;
alter table permission_versions force row level security;
create policy org_scope on permission_versions
    using (org_id = app_org_id() or app_platform())
    with check (org_id = app_org_id() or app_platform());
grant select, insert, update on permission_versions to archomata_runtime;
