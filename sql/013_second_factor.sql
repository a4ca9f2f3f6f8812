-- The second factor (issue 15): a TOTP secret per user, sealed with the data key (AES-GCM,
-- the user id as associated data: a row copied onto another user does not open), and
-- the last time step accepted, so that a code is taken once; recovery codes as SHA-256
-- digests, each used once. Personal rows, as sessions: row-level security by user.
create table mfa_totp (
    user_id       uuid primary key references users (id) on delete cascade,
    secret_sealed bytea not null,
    confirmed_at  timestamptz,
    last_step     bigint not null default 0,
    created_at    timestamptz not null default now()
);
create table mfa_recovery_codes (
    user_id   uuid not null references users (id) on delete cascade,
    code_hash text not null check (code_hash ~ '^[0-9a-f]{64}$'),
    used_at   timestamptz,
    primary key (user_id, code_hash)
);
alter table mfa_totp enable row level security;
alter table mfa_totp force row level security;
create policy user_scope on mfa_totp
    using (user_id = app_user_id() or app_platform())
    with check (user_id = app_user_id() or app_platform());
alter table mfa_recovery_codes enable row level security;
alter table mfa_recovery_codes force row level security;
create policy user_scope on mfa_recovery_codes
    using (user_id = app_user_id() or app_platform())
    with check (user_id = app_user_id() or app_platform());
grant select, insert, update, delete on mfa_totp, mfa_recovery_codes to archomata_runtime;

-- How each session was proven (`amr` of its tokens) and when its second factor was, kept
-- with it so that a refresh carries them on and never renews `mfa_at`.
alter table sessions add column amr text not null default 'pwd' check (amr ~ '^[a-z_,]{1,64}$');
alter table sessions add column mfa_at double precision;
