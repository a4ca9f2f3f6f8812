-- The audit log made tamper-evident, searchable and served by indexes for every filter.
--
-- Hash chains. Each org's entries form one chain, entries without an org one more (its
-- chain id is the nil uuid). An entry carries `seq` (1, 2, 3... within its chain),
-- `prev_hash` (the hash of the entry before it, 32 zero bytes for the first) and `hash`,
-- SHA-256 over a canonical serialisation of the entry and its prev_hash (see
-- audit_entry_hash). Editing, deleting or reordering entries behind the application's
-- back breaks a link that `archomata audit verify` finds; the chain head row also
-- catches entries cut off the end.
--
-- A BEFORE INSERT trigger appends each new entry: it locks its chain's head row FOR
-- UPDATE, so writers of one org take turns until their transaction ends and writers of
-- different orgs never wait for each other. audit.record keeps its signature and no
-- round trip is added. The trigger also stamps `occurred_at` once the lock is held, so
-- within an org time order is commit order (keyset pages never miss a late commit).
--
-- Search (`q`). Row-level security only lets leakproof operators into index conditions,
-- and neither full-text `@@` nor trigram `ILIKE` is leakproof: under the runtime role a
-- GIN index on audit_log would never be used. The words of each entry therefore go to
-- audit_log_terms, searched by btree equality (leakproof) under the same policies.

create table audit_chain_heads (
    chain_id uuid primary key,  -- the org id, or the nil uuid for entries without an org
    seq      bigint not null check (seq >= 0),
    hash     bytea not null check (octet_length(hash) = 32)
);
-- No grant: only the trigger below (security definer, as the owner) and the owner's
-- `audit verify` touch it, so it needs no row-level security of its own.

-- Checkpoints recorded by `archomata audit anchor` before old entries are archived:
-- verification of what remains resumes from the anchor just below the first entry left.
create table audit_anchors (
    chain_id    uuid not null,
    seq         bigint not null check (seq >= 1),
    hash        bytea not null check (octet_length(hash) = 32),
    recorded_at timestamptz not null default now(),
    primary key (chain_id, seq)
);

create table audit_log_terms (
    chain_id    uuid not null,  -- as in audit_chain_heads: never null, so it can lead an index
    term        text not null,
    occurred_at timestamptz not null,  -- the entry's, so a term's entries come newest first
    entry_id    uuid not null
);
create index audit_log_terms_idx
    on audit_log_terms (term, chain_id, occurred_at desc, entry_id desc);
alter table audit_log_terms enable row level security;
alter table audit_log_terms force row level security;
-- The nil uuid is no org's id, so terms of entries without an org are platform-only,
-- exactly as the entries are.
create policy audit_log_terms_read on audit_log_terms for select
    using (chain_id = app_org_id() or app_platform());
create policy audit_log_terms_write on audit_log_terms for insert
    with check (chain_id = '00000000-0000-0000-0000-000000000000' or chain_id = app_org_id()
                or app_platform());
grant select on audit_log_terms to archomata_runtime;

alter table audit_log
    add column seq bigint,
    add column prev_hash bytea,
    add column hash bytea;

-- Lower-cased words of 2 to 100 characters: runs of anything but white space and ASCII
-- punctuation other than `_`, `-` and `:`, so that uuids, IPv6 addresses and snake_case
-- stay whole.
create function audit_search_terms(document text) returns text[]
    language sql immutable parallel safe
    as $$
    select coalesce(array_agg(distinct term order by term), '{}')
    from (select btrim(word, '-:') as term
          from regexp_split_to_table(lower(document),
                                     '[][[:space:]!"#$%&''()*+,./;<=>?@\\^`{|}~]+') word) words
    where length(term) between 2 and 100
    $$;
grant execute on function audit_search_terms(text) to archomata_runtime;

-- What `q` searches: the action, the resource, and the values (not the keys) in details.
create function audit_entry_document(e audit_log) returns text
    language sql immutable parallel safe
    as $$
    select concat_ws(' ', e.action, e.resource_type, e.resource_id,
                     (select string_agg(v #>> '{}', ' ')
                      from jsonb_path_query(e.details, 'strict $.**') v
                      where jsonb_typeof(v) in ('string', 'number')))
    $$;

-- One field of the canonical serialisation: `~` for NULL, else `<UTF-8 length>:<text>`,
-- so that no two different entries serialise alike. archomata/audit_chain.py builds
-- the same bytes from the same text renderings to verify without trusting this code.
create function audit_field(value text) returns text
    language sql immutable parallel safe
    as $$ select case when value is null then '~'
                      else octet_length(convert_to(value, 'UTF8'))::text || ':' || value end $$;

create function audit_entry_hash(e audit_log) returns bytea
    language sql stable parallel safe
    as $$
    select sha256(convert_to(
        'archomata-audit-v1'
        || audit_field(e.org_id::text)
        || audit_field(e.seq::text)
        || audit_field(encode(e.prev_hash, 'hex'))
        || audit_field(e.id::text)
        || audit_field(to_char(e.occurred_at at time zone 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || audit_field(e.actor_type)
        || audit_field(e.actor_id::text)
        || audit_field(e.action)
        || audit_field(e.resource_type)
        || audit_field(e.resource_id)
        || audit_field(e.ip::text)
        || audit_field(e.user_agent)
        || audit_field(e.request_id)
        || audit_field(e.details::text), 'UTF8'))
    $$;

-- Chain the entries written before this migration, oldest first within each chain.
alter table audit_log disable trigger audit_log_no_update_delete;
do $$
declare
    nil constant uuid := '00000000-0000-0000-0000-000000000000';
    e audit_log;
    chain uuid;
    current_chain uuid;
    n bigint := 0;
    prev bytea;
begin
    for e in select * from audit_log order by coalesce(org_id, nil), occurred_at, id loop
        chain := coalesce(e.org_id, nil);
        if current_chain is distinct from chain then
            if current_chain is not null then
                insert into audit_chain_heads values (current_chain, n, prev);
            end if;
            current_chain := chain;
            n := 0;
            prev := decode(repeat('00', 32), 'hex');
        end if;
        n := n + 1;
        e.seq := n;
        e.prev_hash := prev;
        e.hash := audit_entry_hash(e);
        update audit_log set seq = e.seq, prev_hash = e.prev_hash, hash = e.hash
        where id = e.id;
        prev := e.hash;
    end loop;
    if current_chain is not null then
        insert into audit_chain_heads values (current_chain, n, prev);
    end if;
end
$$;
alter table audit_log enable trigger audit_log_no_update_delete;

insert into audit_log_terms (chain_id, term, occurred_at, entry_id)
select coalesce(a.org_id, '00000000-0000-0000-0000-000000000000'), t.term, a.occurred_at, a.id
from audit_log a, unnest(audit_search_terms(audit_entry_document(a))) t(term);

alter table audit_log
    alter column seq set not null,
    alter column prev_hash set not null,
    alter column hash set not null,
    add constraint audit_log_hash_length check (octet_length(hash) = 32
                                                and octet_length(prev_hash) = 32);

-- Chain order: unique within each chain, and the order `audit verify` walks.
create unique index audit_log_chain_idx on audit_log (org_id, seq);
create unique index audit_log_platform_chain_idx on audit_log (seq) where org_id is null;
-- One index per filter of GET /audit-logs, newest first. Equality on org_id after the
-- filter column serves the org listing in order; the platform listing without org_id
-- uses the same index and sorts what matches.
create index audit_log_action_idx on audit_log (action, org_id, occurred_at desc, id desc);
create index audit_log_resource_type_idx
    on audit_log (resource_type, org_id, occurred_at desc, id desc);
create index audit_log_actor_idx on audit_log (actor_id, occurred_at desc, id desc)
    where actor_id is not null;
create index audit_log_resource_idx on audit_log (resource_id, occurred_at desc, id desc)
    where resource_id is not null;

create function audit_log_chain() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
    as $$
declare
    chain constant uuid := coalesce(new.org_id, '00000000-0000-0000-0000-000000000000');
    head audit_chain_heads%rowtype;
begin
    select * into head from audit_chain_heads where chain_id = chain for update;
    if not found then
        insert into audit_chain_heads (chain_id, seq, hash)
        values (chain, 0, decode(repeat('00', 32), 'hex'))
        on conflict (chain_id) do nothing;
        select * into head from audit_chain_heads where chain_id = chain for update;
    end if;
    new.seq := head.seq + 1;
    new.prev_hash := head.hash;
    new.occurred_at := clock_timestamp();
    new.hash := audit_entry_hash(new);
    update audit_chain_heads set seq = new.seq, hash = new.hash where chain_id = chain;
    insert into audit_log_terms (chain_id, term, occurred_at, entry_id)
    select chain, t.term, new.occurred_at, new.id
    from unnest(audit_search_terms(audit_entry_document(new))) t(term);
    return new;
end
$$;
create trigger audit_log_chain
    before insert on audit_log
    for each row execute function audit_log_chain();
