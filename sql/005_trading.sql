-- Trading: MT5 bridge agents and their API keys, trading accounts (credentials encrypted
-- by the service, risk limits), the positions and deals agents report, orders and the
-- commands that carry them to the agents, and strategies.
--
-- Every table is org-scoped with row-level security. Children reference their parent by
-- (org_id, id), so a row can never point at another org's account, agent or order.

create table agents (
    id           uuid primary key default gen_random_uuid(),
    org_id       uuid not null references orgs (id),
    name         text not null check (length(name) between 1 and 200),
    -- The public half of the key (`amk_<key_id>_<secret>`): it locates the row, so a key
    -- costs one bcrypt at most. Only a bcrypt hash of the secret is stored.
    key_id       text not null unique check (key_id ~ '^[0-9a-f]{16}$'),
    key_hash     text not null,
    version      text check (length(version) <= 100),
    terminals    jsonb check (terminals is null or jsonb_typeof(terminals) = 'array'),
    last_seen_at timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    unique (org_id, id)
);
create index agents_org_idx on agents (org_id, created_at desc, id desc);

create table accounts (
    id                 uuid primary key default gen_random_uuid(),
    org_id             uuid not null references orgs (id),
    agent_id           uuid,
    name               text not null check (length(name) between 1 and 200),
    broker             text not null check (length(broker) between 1 and 200),
    server             text not null check (length(server) between 1 and 200),
    login              bigint not null check (login > 0),
    environment        text not null check (environment in ('demo', 'live')),
    -- AES-256-GCM under the data key; the blob names the key it was sealed with.
    credentials        bytea,
    balance            numeric,
    equity             numeric,
    margin             numeric,
    free_margin        numeric,
    currency           text check (length(currency) <= 16),
    state_updated_at   timestamptz,
    trading_enabled    boolean not null default true,
    max_order_volume   numeric check (max_order_volume > 0),
    max_open_positions integer check (max_open_positions >= 0),
    max_daily_loss     numeric check (max_daily_loss >= 0),
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    deleted_at         timestamptz,
    unique (org_id, id),
    foreign key (org_id, agent_id) references agents (org_id, id) on delete set null (agent_id)
);
create index accounts_org_idx on accounts (org_id, created_at desc, id desc)
    where deleted_at is null;
-- The bridge names an account by its login: unique among one agent's accounts.
create unique index accounts_agent_login_idx on accounts (agent_id, login)
    where agent_id is not null and deleted_at is null;

create table positions (
    id            uuid primary key default gen_random_uuid(),
    org_id        uuid not null,
    account_id    uuid not null,
    ticket        bigint not null check (ticket >= 0),
    symbol        text not null,
    side          text not null check (side in ('buy', 'sell')),
    volume        numeric not null,
    open_price    numeric not null,
    current_price numeric,
    sl            numeric,
    tp            numeric,
    profit        numeric,
    opened_at     timestamptz not null,
    unique (account_id, ticket),
    foreign key (org_id, account_id) references accounts (org_id, id) on delete cascade
);
create index positions_account_idx on positions (account_id, opened_at desc, id desc);

create table deals (
    id           uuid primary key default gen_random_uuid(),
    org_id       uuid not null,
    account_id   uuid not null,
    ticket       bigint not null check (ticket >= 0),
    order_ticket bigint check (order_ticket >= 0),
    position_id  bigint check (position_id >= 0),
    symbol       text not null,
    side         text not null check (side in ('buy', 'sell')),
    volume       numeric not null,
    price        numeric not null,
    profit       numeric not null default 0,
    commission   numeric not null default 0,
    swap         numeric not null default 0,
    executed_at  timestamptz not null,
    received_at  timestamptz not null default now(),
    unique (account_id, ticket),
    foreign key (org_id, account_id) references accounts (org_id, id) on delete cascade
);
create index deals_account_idx on deals (account_id, executed_at desc, id desc);

create table orders (
    id              uuid primary key default gen_random_uuid(),
    org_id          uuid not null,
    account_id      uuid not null,
    client_order_id text check (length(client_order_id) between 1 and 64),
    symbol          text not null,
    side            text not null check (side in ('buy', 'sell')),
    type            text not null check (type in ('market', 'limit', 'stop')),
    volume          numeric not null check (volume > 0),
    price           numeric check (price > 0),
    sl              numeric check (sl > 0),
    tp              numeric check (tp > 0),
    -- Set on an order that closes a position: the position's ticket.
    position_ticket bigint,
    status          text not null default 'pending'
                    check (status in ('pending', 'sent', 'filled', 'rejected', 'error',
                                      'cancelled')),
    broker_ticket   bigint,
    fill_price      numeric,
    message         text check (length(message) <= 1000),
    created_by      uuid references users (id),
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    executed_at     timestamptz,
    unique (org_id, id),
    foreign key (org_id, account_id) references accounts (org_id, id)
);
create index orders_org_idx on orders (org_id, created_at desc, id desc);
create index orders_account_idx on orders (account_id, created_at desc, id desc);
create unique index orders_client_id_idx on orders (account_id, client_order_id)
    where client_order_id is not null;

create table commands (
    id           uuid primary key default gen_random_uuid(),
    org_id       uuid not null,
    account_id   uuid not null,
    order_id     uuid,
    type         text not null check (type in ('place_order', 'cancel_order', 'close_position')),
    payload      jsonb not null check (jsonb_typeof(payload) = 'object'),
    status       text not null default 'pending'
                 check (status in ('pending', 'claimed', 'done', 'cancelled')),
    claimed_by   uuid references agents (id) on delete set null,
    claimed_at   timestamptz,
    completed_at timestamptz,
    result       jsonb,
    created_at   timestamptz not null default now(),
    foreign key (org_id, account_id) references accounts (org_id, id),
    foreign key (org_id, order_id) references orders (org_id, id)
);
-- The queue agents claim from (FOR UPDATE SKIP LOCKED), oldest first.
create index commands_pending_idx on commands (account_id, created_at, id)
    where status = 'pending';
create index commands_order_idx on commands (order_id);

create table strategies (
    id          uuid primary key default gen_random_uuid(),
    org_id      uuid not null references orgs (id),
    name        text not null check (length(name) between 1 and 200),
    description text not null default '' check (length(description) <= 2000),
    parameters  jsonb not null default '{}'::jsonb check (jsonb_typeof(parameters) = 'object'),
    enabled     boolean not null default false,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    unique (org_id, id),
    unique (org_id, name)
);
create index strategies_org_idx on strategies (org_id, created_at desc, id desc);

create table strategy_accounts (
    org_id      uuid not null,
    strategy_id uuid not null,
    account_id  uuid not null,
    primary key (strategy_id, account_id),
    foreign key (org_id, strategy_id) references strategies (org_id, id) on delete cascade,
    foreign key (org_id, account_id) references accounts (org_id, id) on delete cascade
);
create index strategy_accounts_account_idx on strategy_accounts (account_id);

do $$
declare t text;
begin
    foreach t in array array['agents', 'accounts', 'positions', 'deals', 'orders', 'commands',
                             'strategies', 'strategy_accounts'] loop
        execute format('alter table %I enable row level security', t);
        execute format('alter table %I force row level security', t);
        execute format('create policy org_scope on %I using (org_id = app_org_id() or app_platform()) '
                       'with check (org_id = app_org_id() or app_platform())', t);
        execute format('grant select, insert, update, delete on %I to archomata_runtime', t);
    end loop;
end
$$;
