-- Commands are leased, never lost, never doubled (the contract's bridge section).
--
-- A poll leases the commands it hands out until `lease_expires_at`; one with no result
-- by then is handed out again (same id, `attempt` + 1), and a result from any attempt
-- is taken once. Each order carries a `client_tag` (at most 20 characters: MT5 order
-- comments are short) for the agent to write into the order comment and look for
-- after a crash before executing a re-delivered command; the broker's `retcode` is kept.

alter table commands
    add column attempt          integer not null default 0 check (attempt >= 0),
    add column lease_expires_at timestamptz,
    add constraint commands_claimed_has_lease
        check (status <> 'claimed' or lease_expires_at is not null) not valid;

-- The owner is subject to the forced row-level security too: see every org for the
-- backfill below (transaction-local, like the runtime's scopes).
select set_config('app.platform', 'on', true);

-- Commands claimed before leases existed were handed out once: one attempt, whose lease
-- has run out, so they are handed out again (the agent reconciles by the order's tag).
update commands set attempt = 1, lease_expires_at = coalesce(claimed_at, now())
where status = 'claimed';
alter table commands validate constraint commands_claimed_has_lease;

-- The leases that run out, for the claim query beside commands_pending_idx.
create index commands_leased_idx on commands (account_id, lease_expires_at)
    where status = 'claimed';

alter table orders
    add column client_tag text check (client_tag ~ '^[a-z0-9]{1,20}$'),
    add column retcode    integer;
update orders set client_tag = 'am' || left(md5(id::text), 18) where client_tag is null;
alter table orders alter column client_tag set not null;
create unique index orders_client_tag_idx on orders (client_tag);
