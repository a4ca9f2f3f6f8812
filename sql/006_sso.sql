-- Single sign-on: accounts at OpenID providers linked to users. Not org-scoped (no
-- org_id, no row-level security), like users: one person signs in once for every org.
--
-- `subject` is what the provider guarantees stable and unique for the person: Google's
-- `sub`; for Azure AD `tid:oid` (tenant and object id), never the mutable email.
-- `email` is only shown to the user; it decides nothing once the identity is linked.

create table user_identities (
    id        uuid primary key default gen_random_uuid(),
    user_id   uuid not null references users (id),
    provider  text not null check (provider in ('google', 'azure')),
    subject   text not null check (length(subject) between 1 and 255),
    email     text check (length(email) <= 320),
    linked_at timestamptz not null default now(),
    unique (provider, subject)
);
create index user_identities_user_idx on user_identities (user_id);
grant select, insert, update (email), delete on user_identities to archomata_runtime;
