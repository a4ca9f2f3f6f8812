-- Authorisation: the permission catalogue, the seven system roles, role assignment to
-- members and groups, groups and their members, and invitations.

create table permissions (
    name text primary key check (name ~ '^[a-z_]+:[a-z_]+$')
);
insert into permissions (name) values
    ('accounts:create'),
    ('accounts:delete'),
    ('accounts:read'),
    ('accounts:update'),
    ('agents:create'),
    ('agents:delete'),
    ('agents:read'),
    ('agents:update'),
    ('audit_logs:create'),
    ('audit_logs:delete'),
    ('audit_logs:read'),
    ('audit_logs:update'),
    ('deals:create'),
    ('deals:delete'),
    ('deals:read'),
    ('deals:update'),
    ('groups:create'),
    ('groups:delete'),
    ('groups:read'),
    ('groups:update'),
    ('members:create'),
    ('members:delete'),
    ('members:read'),
    ('members:update'),
    ('orders:cancel'),
    ('orders:create'),
    ('orders:delete'),
    ('orders:read'),
    ('orders:update'),
    ('org:create'),
    ('org:delete'),
    ('org:read'),
    ('org:update'),
    ('positions:create'),
    ('positions:delete'),
    ('positions:read'),
    ('positions:update'),
    ('risk_limits:create'),
    ('risk_limits:delete'),
    ('risk_limits:read'),
    ('risk_limits:update'),
    ('roles:create'),
    ('roles:delete'),
    ('roles:read'),
    ('roles:update'),
    ('strategies:create'),
    ('strategies:delete'),
    ('strategies:read'),
    ('strategies:update');
grant select on permissions to archomata_runtime;

-- System roles are shared by every org (no org_id): what they grant is the contract's.
create table roles (
    id          uuid primary key default gen_random_uuid(),
    name        text not null unique,
    description text not null,
    is_system   boolean not null default true
);
create table role_permissions (
    role_id    uuid not null references roles (id),
    permission text not null references permissions (name),
    primary key (role_id, permission)
);
insert into roles (name, description) values
    ('Viewer', 'Reads trading data'),
    ('Trader', 'Viewer who places and cancels orders'),
    ('Strategist', 'Viewer who manages strategies'),
    ('Developer', 'Viewer who builds strategies and agents'),
    ('Operations', 'Viewer who runs accounts and agents'),
    ('Risk Manager', 'Viewer who sets risk limits, cancels orders and reads the audit log'),
    ('Administrator', 'Every permission');
insert into role_permissions (role_id, permission)
select r.id, v.permission
from (values
    ('Viewer', 'accounts:read'),
    ('Viewer', 'agents:read'),
    ('Viewer', 'deals:read'),
    ('Viewer', 'orders:read'),
    ('Viewer', 'positions:read'),
    ('Viewer', 'risk_limits:read'),
    ('Viewer', 'strategies:read'),
    ('Trader', 'accounts:read'),
    ('Trader', 'agents:read'),
    ('Trader', 'deals:read'),
    ('Trader', 'orders:cancel'),
    ('Trader', 'orders:create'),
    ('Trader', 'orders:read'),
    ('Trader', 'positions:read'),
    ('Trader', 'risk_limits:read'),
    ('Trader', 'strategies:read'),
    ('Strategist', 'accounts:read'),
    ('Strategist', 'agents:read'),
    ('Strategist', 'deals:read'),
    ('Strategist', 'orders:read'),
    ('Strategist', 'positions:read'),
    ('Strategist', 'risk_limits:read'),
    ('Strategist', 'strategies:create'),
    ('Strategist', 'strategies:delete'),
    ('Strategist', 'strategies:read'),
    ('Strategist', 'strategies:update'),
    ('Developer', 'accounts:read'),
    ('Developer', 'agents:create'),
    ('Developer', 'agents:read'),
    ('Developer', 'agents:update'),
    ('Developer', 'deals:read'),
    ('Developer', 'orders:read'),
    ('Developer', 'positions:read'),
    ('Developer', 'risk_limits:read'),
    ('Developer', 'strategies:create'),
    ('Developer', 'strategies:read'),
    ('Developer', 'strategies:update'),
    ('Operations', 'accounts:create'),
    ('Operations', 'accounts:delete'),
    ('Operations', 'accounts:read'),
    ('Operations', 'accounts:update'),
    ('Operations', 'agents:create'),
    ('Operations', 'agents:delete'),
    ('Operations', 'agents:read'),
    ('Operations', 'agents:update'),
    ('Operations', 'deals:read'),
    ('Operations', 'orders:read'),
    ('Operations', 'positions:read'),
    ('Operations', 'risk_limits:read'),
    ('Operations', 'strategies:read'),
    ('Risk Manager', 'accounts:read'),
    ('Risk Manager', 'agents:read'),
    ('Risk Manager', 'audit_logs:read'),
    ('Risk Manager', 'deals:read'),
    ('Risk Manager', 'orders:cancel'),
    ('Risk Manager', 'orders:read'),
    ('Risk Manager', 'positions:read'),
    ('Risk Manager', 'risk_limits:read'),
    ('Risk Manager', 'risk_limits:update'),
    ('Risk Manager', 'strategies:read'),
    ('Administrator', 'accounts:create'),
    ('Administrator', 'accounts:delete'),
    ('Administrator', 'accounts:read'),
    ('Administrator', 'accounts:update'),
    ('Administrator', 'agents:create'),
    ('Administrator', 'agents:delete'),
    ('Administrator', 'agents:read'),
    ('Administrator', 'agents:update'),
    ('Administrator', 'audit_logs:create'),
    ('Administrator', 'audit_logs:delete'),
    ('Administrator', 'audit_logs:read'),
    ('Administrator', 'audit_logs:update'),
    ('Administrator', 'deals:create'),
    ('Administrator', 'deals:delete'),
    ('Administrator', 'deals:read'),
    ('Administrator', 'deals:update'),
    ('Administrator', 'groups:create'),
    ('Administrator', 'groups:delete'),
    ('Administrator', 'groups:read'),
    ('Administrator', 'groups:update'),
    ('Administrator', 'members:create'),
    ('Administrator', 'members:delete'),
    ('Administrator', 'members:read'),
    ('Administrator', 'members:update'),
    ('Administrator', 'orders:cancel'),
    ('Administrator', 'orders:create'),
    ('Administrator', 'orders:delete'),
    ('Administrator', 'orders:read'),
    ('Administrator', 'orders:update'),
    ('Administrator', 'org:create'),
    ('Administrator', 'org:delete'),
    ('Administrator', 'org:read'),
    ('Administrator', 'org:update'),
    ('Administrator', 'positions:create'),
    ('Administrator', 'positions:delete'),
    ('Administrator', 'positions:read'),
    ('Administrator', 'positions:update'),
    ('Administrator', 'risk_limits:create'),
    ('Administrator', 'risk_limits:delete'),
    ('Administrator', 'risk_limits:read'),
    ('Administrator', 'risk_limits:update'),
    ('Administrator', 'roles:create'),
    ('Administrator', 'roles:delete'),
    ('Administrator', 'roles:read'),
    ('Administrator', 'roles:update'),
    ('Administrator', 'strategies:create'),
    ('Administrator', 'strategies:delete'),
    ('Administrator', 'strategies:read'),
    ('Administrator', 'strategies:update')
) v(role_name, permission) join roles r on r.name = v.role_name;
grant select on roles, role_permissions to archomata_runtime;

create table member_roles (
    org_id  uuid not null,
    user_id uuid not null,
    role_id uuid not null references roles (id),
    primary key (org_id, user_id, role_id),
    foreign key (org_id, user_id) references memberships (org_id, user_id) on delete cascade
);

create table groups (
    id          uuid primary key default gen_random_uuid(),
    org_id      uuid not null references orgs (id),
    name        text not null check (length(name) between 1 and 200),
    description text not null default '' check (length(description) <= 2000),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    unique (org_id, name),
    unique (org_id, id)
);

create table group_members (
    org_id   uuid not null,
    group_id uuid not null,
    user_id  uuid not null,
    primary key (org_id, group_id, user_id),
    foreign key (org_id, group_id) references groups (org_id, id) on delete cascade,
    foreign key (org_id, user_id) references memberships (org_id, user_id) on delete cascade
);
create index group_members_user_idx on group_members (org_id, user_id);

create table group_roles (
    org_id   uuid not null,
    group_id uuid not null,
    role_id  uuid not null references roles (id),
    primary key (org_id, group_id, role_id),
    foreign key (org_id, group_id) references groups (org_id, id) on delete cascade
);

create table invitations (
    id             uuid primary key default gen_random_uuid(),
    org_id         uuid not null references orgs (id),
    email          text not null,
    email_normalized text not null,
    org_role       text not null check (org_role in ('member', 'administrator')),
    role_ids       uuid[] not null default '{}',
    group_ids      uuid[] not null default '{}',
    token_hash     bytea not null unique check (length(token_hash) = 32),
    invited_by     uuid references users (id),
    expires_at     timestamptz not null,
    accepted_at    timestamptz,
    accepted_by    uuid references users (id),
    created_at     timestamptz not null default now()
);
create index invitations_org_idx on invitations (org_id, created_at desc);

do $$
declare t text;
begin
    foreach t in array array['member_roles', 'groups', 'group_members', 'group_roles',
                             'invitations'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy org_scope on %I using (org_id = app_org_id() or app_platform()) '
                       'with check (org_id = app_org_id() or app_platform())', t);
        execute format('grant select, insert, update, delete on %I to archomata_runtime', t);
    end loop;
end
$$;
