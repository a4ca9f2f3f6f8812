-- Identity: single-use mail tokens (email verification, password reset), stored hashed.

create table mail_tokens (
    token_hash bytea primary key check (length(token_hash) = 32),
    user_id    uuid not null references users (id),
    purpose    text not null check (purpose in ('verify_email', 'password_reset')),
    expires_at timestamptz not null,
    used_at    timestamptz,
    created_at timestamptz not null default now()
);
create index mail_tokens_user_idx on mail_tokens (user_id, purpose);
grant select, insert, update on mail_tokens to archomata_runtime;

create index users_disabled_idx on users (id) where disabled_at is not null;
create index users_tokens_valid_after_idx on users (id) where tokens_valid_after is not null;
create index orgs_disabled_idx on orgs (id) where disabled_at is not null;
