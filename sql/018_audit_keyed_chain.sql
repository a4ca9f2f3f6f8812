-- The audit chain keyed: from here on each entry's `hash` is HMAC-SHA-256 under
-- ARCHOMATA_AUDIT_KEY, which lives in the service's environment and never in the
-- database. Until now the chain was SHA-256 computed by the trigger (sql/004): whoever
-- held the database could switch the trigger off, delete an entry, re-hash what
-- followed, move the head, and verification still passed.
--
-- The key cannot be given to a trigger without putting it in the database (a setting,
-- an argument, a statement in the logs), so the service computes the MAC itself, under
-- the chain's lock and in the entry's transaction (archomata/audit/keyed.py):
--   1. audit_chain_next(chains) locks each chain's head row FOR UPDATE (created when
--      missing) and returns its seq, hash and the clock: the entry's seq is head+1, its
--      prev_hash the head's hash, its occurred_at that clock (stamped under the lock, so
--      that within an org time order stays commit order);
--   2. the service computes the entry's MAC over its canonical serialisation, prev_hash
--      included, and inserts the entry with seq, prev_hash, occurred_at and hash;
--   3. the trigger checks that the entry is the head's next link (anything else is
--      refused: an entry inserted by SQL, the runtime role's or a migration's, cannot
--      carry a MAC), moves the head and writes the entry's search terms as before.
-- One round trip more per audited change: the price of a key the database never sees.
--
-- Entries already written stay as they are, the unkeyed SHA-256 segment of their chain,
-- and verify as before. Where each segment ends is recorded here in audit_chain_legacy,
-- but a table the owner can edit cannot say it (raise the boundary, re-hash the whole
-- chain unkeyed, and it would verify). So the first keyed entry of the chain without an
-- org is a manifest, `audit.chain_keyed`, written by whichever writer comes first
-- (audit_chain_next hands it the boundaries): its MAC seals every chain's unkeyed seq
-- and last hash, and `audit verify` honours an unkeyed entry only below the manifest's
-- boundary of its chain and only if that segment ends in the sealed hash. A database
-- without a manifest has no unkeyed segment. To forge one the owner would have to cut
-- the chain without an org back to before its manifest: a truncation, which only an
-- outside witness catches (`audit anchor --output`), as any truncation.
-- Anchors recorded from now on carry a MAC too; one without (recorded before this
-- migration) is trusted only inside the unkeyed segment.

create table audit_chain_legacy (
    chain_id uuid primary key,
    seq      bigint not null check (seq >= 1),
    hash     bytea not null check (octet_length(hash) = 32)
);
-- No grant, as for the heads: only the owner's `audit verify` reads it.
insert into audit_chain_legacy (chain_id, seq, hash)
select chain_id, seq, hash from audit_chain_heads where seq > 0;

alter table audit_anchors
    add column mac bytea check (mac is null or octet_length(mac) = 32);

-- Locks the head of each chain named (an org id, or null for entries without an org),
-- in a fixed order so that two transactions never wait for each other in a circle, and
-- returns what the next entry of each links to. The caller may append only where it
-- may insert entries (the audit_log_write policy): its own org, entries without an org,
-- or any as the platform. `legacy` is the manifest's content when the next entry of the
-- chain without an org must be the manifest, else null.
create function audit_chain_next(orgs uuid[])
    returns table (chain_id uuid, seq bigint, hash bytea, at timestamptz, legacy jsonb)
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
    as $$
declare
    nil constant uuid := '00000000-0000-0000-0000-000000000000';
    chain uuid;
begin
    for chain in select distinct coalesce(o, nil) from unnest(orgs) o order by 1 loop
        if chain <> nil and chain is distinct from app_org_id() and not app_platform() then
            raise exception 'audit chain % is not in this transaction''s scope', chain
                using errcode = 'insufficient_privilege';
        end if;
        insert into audit_chain_heads as h (chain_id, seq, hash)
        values (chain, 0, decode(repeat('00', 32), 'hex'))
        on conflict on constraint audit_chain_heads_pkey do nothing;
        return query
            select h.chain_id, h.seq, h.hash, clock_timestamp(),
                   case when h.chain_id = nil
                         and h.seq = coalesce((select l.seq from audit_chain_legacy l
                                               where l.chain_id = nil), 0)
                         and exists (select from audit_chain_legacy)
                   then (select jsonb_agg(jsonb_build_object(
                                 'chain', l.chain_id, 'seq', l.seq,
                                 'hash', encode(l.hash, 'hex')) order by l.chain_id)
                         from audit_chain_legacy l) end
            from audit_chain_heads h where h.chain_id = chain for update;
    end loop;
end
$$;
revoke execute on function audit_chain_next(uuid[]) from public;
grant execute on function audit_chain_next(uuid[]) to archomata_runtime;

create or replace function audit_log_chain() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, public, pg_temp
    as $$
declare
    chain constant uuid := coalesce(new.org_id, '00000000-0000-0000-0000-000000000000');
    head audit_chain_heads%rowtype;
begin
    select * into head from audit_chain_heads where chain_id = chain for update;
    if not found or new.seq is distinct from head.seq + 1
       or new.prev_hash is distinct from head.hash or new.hash is null
       or new.occurred_at is null then
        raise exception 'audit entry is not the next link of its chain: entries are '
                        'written by the service (audit_chain_next, then the keyed entry)'
            using errcode = 'insufficient_privilege';
    end if;
    update audit_chain_heads set seq = new.seq, hash = new.hash where chain_id = chain;
    insert into audit_log_terms (chain_id, term, occurred_at, entry_id)
    select chain, t.term, new.occurred_at, new.id
    from unnest(audit_search_terms(audit_entry_document(new))) t(term);
    return new;
end
$$;
