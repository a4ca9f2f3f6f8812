-- Sessions kept in PostgreSQL as well as Redis: when Redis restarts empty, is flushed, or
-- fails over to a replica that lost writes, the live ones are put back from here before
-- any token is accepted (archomata.identity.revocation.rebuild), so no one is signed out
-- and every revocation holds. Hashes only, as in Redis: never a token. Times are epoch
-- seconds, as the sessions store keeps them. Personal, not org-scoped (the org is where
-- the session currently is): each row is its user's, written only in a transaction
-- scoped to that user, read whole only by the rebuild (every org's scope).
create table sessions (
    id           uuid primary key,
    user_id      uuid not null references users (id),
    org_id       uuid references orgs (id),
    created_at   double precision not null,
    last_used_at double precision not null,
    ip           text not null check (length(ip) <= 64),
    user_agent   text not null check (length(user_agent) <= 256),
    expires_at   double precision not null,
    current_hash text not null check (current_hash ~ '^[0-9a-f]{64}$'),
    parent_hash  text check (parent_hash ~ '^[0-9a-f]{64}$'),
    rotated_at   double precision not null,
    revoked_at   timestamptz
);
create index sessions_user_live_idx on sessions (user_id) where revoked_at is null;
create index sessions_live_idx on sessions (expires_at) where revoked_at is null;
alter table sessions enable row level security;
alter table sessions force row level security;
create policy user_scope on sessions
    using (user_id = app_user_id() or app_platform())
    with check (user_id = app_user_id() or app_platform());
grant select, insert, update on sessions to archomata_runtime;
