-- Foundation: scope helpers for row-level security, tenants, people, memberships, and
-- the append-only audit log. Runs as the schema owner; the runtime group role
-- `archomata_runtime` (created by `archomata migrate`) receives only what it needs.

revoke create on schema public from public;
grant usage on schema public to archomata_runtime;

-- The per-transaction scope set by archomata.db. An unset or empty setting means "none",
-- so a query outside a scoped transaction matches no org-scoped row (fail closed).
create function app_org_id() returns uuid
    language sql stable parallel safe
    as $$ select nullif(current_setting('app.org_id', true), '')::uuid $$;

create function app_user_id() returns uuid
    language sql stable parallel safe
    as $$ select nullif(current_setting('app.user_id', true), '')::uuid $$;

create function app_platform() returns boolean
    language sql stable parallel safe
    as $$ select coalesce(current_setting('app.platform', true), '') = 'on' $$;

grant execute on function app_org_id(), app_user_id(), app_platform() to archomata_runtime;

create table orgs (
    id          uuid primary key default gen_random_uuid(),
    name        text not null check (length(name) between 1 and 200),
    disabled_at timestamptz,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
grant select, insert, update on orgs to archomata_runtime;

create table users (
    id                 uuid primary key default gen_random_uuid(),
    email              text not null,
    email_normalized   text not null unique,
    name               text not null check (length(name) between 1 and 200),
    password_hash      text,
    email_verified_at  timestamptz,
    platform_role      text not null default 'user'
                       check (platform_role in ('user', 'platform_administrator')),
    disabled_at        timestamptz,
    -- Access tokens issued before this instant are dead (logout-all, password change).
    tokens_valid_after timestamptz,
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now()
);
grant select, insert, update on users to archomata_runtime;

create table memberships (
    org_id     uuid not null references orgs (id),
    user_id    uuid not null references users (id),
    org_role   text not null check (org_role in ('member', 'administrator')),
    created_at timestamptz not null default now(),
    primary key (org_id, user_id)
);
create index memberships_user_idx on memberships (user_id);
alter table memberships enable row level security;
alter table memberships force row level security;
-- A user sees their own memberships in every org (to list and switch orgs); an org
-- sees its members.
create policy memberships_scope on memberships
    using (org_id = app_org_id() or user_id = app_user_id() or app_platform())
    with check (org_id = app_org_id() or app_platform());
grant select, insert, update, delete on memberships to archomata_runtime;

create table audit_log (
    id            uuid primary key default gen_random_uuid(),
    occurred_at   timestamptz not null default clock_timestamp(),
    org_id        uuid references orgs (id),
    actor_type    text not null check (actor_type in ('user', 'agent', 'system')),
    actor_id      uuid,
    action        text not null check (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    resource_type text,
    resource_id   text,
    ip            inet,
    user_agent    text,
    request_id    text,
    details       jsonb not null default '{}'::jsonb check (jsonb_typeof(details) = 'object')
);
create index audit_log_org_time_idx on audit_log (org_id, occurred_at desc, id desc);
create index audit_log_time_idx on audit_log (occurred_at desc, id desc);
alter table audit_log enable row level security;
alter table audit_log force row level security;
-- Entries without an org (a failed login for an unknown email, a platform act on a
-- user) are written by anyone but read only by the platform.
create policy audit_log_read on audit_log for select
    using (org_id = app_org_id() or app_platform());
create policy audit_log_write on audit_log for insert
    with check (org_id is null or org_id = app_org_id() or app_platform());
grant select, insert on audit_log to archomata_runtime;

create function audit_log_immutable() returns trigger
    language plpgsql
    as $$
begin
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end
$$;
create trigger audit_log_no_update_delete
    before update or delete on audit_log
    for each row execute function audit_log_immutable();
create trigger audit_log_no_truncate
    before truncate on audit_log
    for each statement execute function audit_log_immutable();
