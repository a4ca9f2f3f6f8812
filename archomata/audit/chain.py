"""The audit log's hash chains, walked: `archomata audit verify` and `audit anchor`.

Each org's entries form a chain, and entries without an org one more (sql/004): entry
`seq` n carries the hash of entry n-1 (`prev_hash`) and its own `hash`. Since sql/018 that
hash is HMAC-SHA-256 under ARCHOMATA_AUDIT_KEY (archomata/audit/keyed.py), which the
database never holds: whoever holds the database can still delete or rewrite rows, but
cannot make them verify. Entries written before it (up to the seq audit_chain_legacy
records per chain) keep their unkeyed SHA-256 and verify as before; the first keyed entry
links to the last of them, so its MAC seals them too. This module recomputes every hash
and MAC in Python from what the database returns, so a rewritten SQL function cannot
vouch for itself.

Each entry's search terms (audit_log_terms, what `q` finds it by) are checked as well:
a term deleted to hide an entry from a search is a broken link of its chain. The two
functions that derive them are checked against the text they were created with.

Verification reports the first broken link of each chain: an entry whose content no
longer matches its hash (edited), a seq that skips (deleted), an entry that does not
link to the one before it (reordered, or inserted behind the trigger's back), a chain
head that runs past the last entry (cut off the end), or an entry that contradicts an
anchor. Anchors (`audit anchor --before T`) are checkpoints recorded before old entries
are archived; a chain whose first entries are gone resumes from the anchor just below
what remains (docs/audit-retention.md). An anchor counts only with a valid MAC (or, made
before sql/018, inside the unkeyed segment). A witness file (`audit anchor --output`:
signed heads kept outside the database) catches what the database alone cannot: entries
cut off the end, or a chain rewritten past a witnessed head.

Run as the schema owner (ARCHOMATA_DATABASE_OWNER_URL): the runtime role cannot read
the chain heads.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from archomata.audit import keyed
from archomata.audit.chain_walk import GENESIS, Break, ChainWalk, entry_mac
from archomata.audit.witness import (
    NIL,
    Witnessed,
    WitnessError,
    chain_arg,
    chain_label,
    read_witness,
    write_witness,
)

PREFETCH = 2000

# With each entry, the search terms it should have (audit_search_terms, checked by
# FUNCTIONS below) that audit_log_terms lacks: probed on the very index `q` walks.
ENTRIES = """
    select id, coalesce(org_id, '00000000-0000-0000-0000-000000000000') as chain_id,
           seq, prev_hash, hash, org_id, occurred_at, actor_id, host(ip) as ip,
           details::text as details,
           array(select w.term from unnest(audit_search_terms(audit_entry_document(a))) w(term)
                 where not exists (
                     select from audit_log_terms t
                     where t.term = w.term
                       and t.chain_id = coalesce(a.org_id, '00000000-0000-0000-0000-000000000000')
                       and t.occurred_at = a.occurred_at and t.entry_id = a.id)
           ) as missing_terms,
           org_id::text as org_text, seq::text as seq_text,
           encode(prev_hash, 'hex') as prev_text, id::text as id_text,
           to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               as occurred_text,
           actor_type, actor_id::text as actor_text, action, resource_type, resource_id,
           ip::text as ip_text, user_agent, request_id, details::text as details_text
    from audit_log a
"""
# Both orders are served by audit_log_chain_idx (org_id, seq); nulls sort last.
ALL_ENTRIES = ENTRIES + " order by org_id, seq"
ORG_ENTRIES = ENTRIES + " where org_id = $1 order by seq"
PLATFORM_ENTRIES = ENTRIES + " where org_id is null order by seq"
HEADS = "select chain_id, seq, hash from audit_chain_heads"
ANCHORS = "select chain_id, seq, hash, mac from audit_anchors"
LEGACY = "select chain_id, seq, hash from audit_chain_legacy"
# The manifest (sql/018): the first keyed entry of the chain without an org, sealing
# where each chain's unkeyed segment ends.
MANIFEST = ENTRIES + """ where a.org_id is null and a.action = 'audit.chain_keyed'
                         order by a.seq limit 1"""
# The functions that derive an entry's search terms, as sql/004 created them: SHA-256 of
# their bodies. Changed, they could leave a word out of both the terms and the check.
FUNCTIONS = """
    select p.oid::regprocedure::text as name, p.prosrc, p.prosecdef
    from pg_catalog.pg_proc p
    where p.oid in ('audit_search_terms(text)'::regprocedure,
                    'audit_entry_document(audit_log)'::regprocedure)
"""
PINNED = {
    "audit_search_terms(text)":
        "11188c50263b448cedc6000a65efeccd6b13b5148fe2d681e84690213910f97a",
    "audit_entry_document(audit_log)":
        "155de0e7939df65dcd3370ff8b9305c8adeee9d0f15b6d74482e23c3143634ae",
}


@dataclass(frozen=True, slots=True)
class Report:
    chains: list[ChainWalk]
    changed_functions: list[str] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.chains)

    @property
    def breaks(self) -> list[Break]:
        return [c.broken for c in self.chains if c.broken is not None]

    def problems(self) -> list[str]:
        return [b.describe() for b in self.breaks] + [
            f"search terms: function {name} is not the one sql/004 created (it could leave "
            "words out of both the terms and this check)" for name in self.changed_functions]


async def _rows(conn: asyncpg.Connection, org_id: UUID | None) -> AsyncIterator[Any]:
    args: tuple[Any, ...]
    if org_id is None:
        query, args = ALL_ENTRIES, ()
    elif org_id == NIL:
        query, args = PLATFORM_ENTRIES, ()
    else:
        query, args = ORG_ENTRIES, (org_id,)
    async for row in conn.cursor(query, *args, prefetch=PREFETCH):
        yield row


async def _legacy(conn: asyncpg.Connection, key: bytes,
                  heads: dict[UUID, tuple[int, bytes]]) -> dict[UUID, tuple[int, bytes]]:
    """Where each chain's unkeyed segment ends, as the manifest sealed it; nothing when
    the manifest does not verify where it stands. Before the manifest is written (no
    keyed entry without an org yet), audit_chain_legacy as the migration recorded it:
    the owner could rewrite it then, but the next writer would seal that very table, so
    the database vouches for it no less than the manifest would."""
    row = await conn.fetchrow(MANIFEST)
    if row is None:
        table = {r["chain_id"]: (r["seq"], bytes(r["hash"])) for r in await conn.fetch(LEGACY)}
        due = heads.get(NIL, (0, GENESIS))[0] == table.get(NIL, (0, GENESIS))[0]
        return table if due else {}
    if not keyed.same(entry_mac(key, row), bytes(row["hash"])):
        return {}
    try:
        sealed = {UUID(e["chain"]): (int(e["seq"]), bytes.fromhex(e["hash"]))
                  for e in json.loads(row["details"])["legacy"]}
    except (ValueError, KeyError, TypeError):
        return {}
    if sealed.get(NIL, (0, GENESIS)) != (row["seq"] - 1, bytes(row["prev_hash"])):
        return {}  # not the first keyed entry of its chain
    return sealed


async def _anchors(conn: asyncpg.Connection, key: bytes,
                   legacy: dict[UUID, tuple[int, bytes]]) -> dict[UUID, dict[int, bytes]]:
    """The anchors verification may resume from: signed with the key, or recorded before
    the chain was keyed and inside its unkeyed segment. Any other is ignored, as if the
    owner had never been able to write one."""
    anchors: dict[UUID, dict[int, bytes]] = {}
    for r in await conn.fetch(ANCHORS):
        chain, seq, hash_ = r["chain_id"], r["seq"], bytes(r["hash"])
        signed = r["mac"] is not None and keyed.same(
            bytes(r["mac"]), keyed.anchor_mac(key, chain, seq, hash_))
        if signed or (r["mac"] is None and seq <= legacy.get(chain, (0, b""))[0]):
            anchors.setdefault(chain, {})[seq] = hash_
    return anchors


async def _changed_functions(conn: asyncpg.Connection) -> list[str]:
    found = {r["name"]: r for r in await conn.fetch(FUNCTIONS)}
    return [name for name, digest in PINNED.items()
            if name not in found or found[name]["prosecdef"]
            or hashlib.sha256(found[name]["prosrc"].encode()).hexdigest() != digest]


async def _walk(conn: asyncpg.Connection, org_id: UUID | None, key: bytes,
                witness: Witnessed | None = None) -> Report:
    witness = witness or {}
    heads = {r["chain_id"]: (r["seq"], bytes(r["hash"])) for r in await conn.fetch(HEADS)}
    legacy = await _legacy(conn, key, heads)
    anchors = await _anchors(conn, key, legacy)

    def walk_of(chain: UUID) -> ChainWalk:
        return ChainWalk(chain, key, anchors.get(chain, {}), legacy.get(chain, (0, GENESIS)),
                         witness.get(chain, {}))

    walks: dict[UUID, ChainWalk] = {}
    async for row in _rows(conn, org_id):
        chain = row["chain_id"]
        walk = walks.get(chain)
        if walk is None:
            walk = walks[chain] = walk_of(chain)
        walk.feed(row)
    wanted: Callable[[UUID], bool] = (lambda _: True) if org_id is None \
        else (lambda chain: chain == org_id)
    for chain in (heads.keys() | witness.keys()) - walks.keys():
        if wanted(chain):
            walks[chain] = walk_of(chain)
    for chain, walk in walks.items():
        walk.finish(heads.get(chain))
    return Report(sorted(walks.values(), key=lambda w: (w.chain_id == NIL, str(w.chain_id))),
                  await _changed_functions(conn))


async def _see_everything(conn: asyncpg.Connection) -> None:
    # The owner may lack BYPASSRLS; FORCE ROW LEVEL SECURITY then applies to it too. The
    # catalog first, whatever the owner's own search_path says: no function of theirs
    # may stand in for one of PostgreSQL's while the terms are checked.
    await conn.execute("select set_config('app.platform', 'on', true), "
                       "set_config('search_path', 'pg_catalog, ' || "
                       "current_setting('search_path'), true)")


async def verify(conn: asyncpg.Connection, key: bytes, org_id: UUID | None = None,
                 witness: Witnessed | None = None) -> Report:
    """Walks every chain (or one org's; NIL for entries without an org) in one snapshot,
    so that entries committed meanwhile cannot make heads and entries disagree."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await _see_everything(conn)
        return await _walk(conn, org_id, key, witness)


@dataclass(frozen=True, slots=True)
class Anchor:
    chain_id: UUID
    seq: int
    hash: bytes


LAST_BEFORE = """
    select distinct on (chain_id) chain_id, seq, hash from (
        select coalesce(org_id, '00000000-0000-0000-0000-000000000000') as chain_id, seq, hash
        from audit_log where occurred_at < $1
          and ($2::uuid is null or coalesce(org_id, '00000000-0000-0000-0000-000000000000') = $2)
    ) s order by chain_id, seq desc
"""
INSERT_ANCHOR = """
    insert into audit_anchors (chain_id, seq, hash, mac) values ($1, $2, $3, $4)
    on conflict (chain_id, seq) do update set mac = excluded.mac
        where audit_anchors.hash = excluded.hash
"""


class ChainBroken(Exception):
    """`audit anchor` refuses to vouch for a chain that does not verify."""


async def record_anchors(conn: asyncpg.Connection, key: bytes, before: datetime | None,
                         org_id: UUID | None = None) -> tuple[list[Anchor], list[Anchor]]:
    """Verifies the chains, then records for each the last entry before `before` (if
    given) as an anchor, signed: entries up to it may then be archived
    (docs/audit-retention.md). Returns those anchors, and each verified chain's head."""
    async with conn.transaction(isolation="repeatable_read"):
        await _see_everything(conn)
        report = await _walk(conn, org_id, key)
        if report.breaks or report.changed_functions:
            raise ChainBroken("; ".join(report.problems()))
        anchors: list[Anchor] = []
        if before is not None:
            rows = await conn.fetch(LAST_BEFORE, before, org_id)
            anchors = [Anchor(r["chain_id"], r["seq"], bytes(r["hash"])) for r in rows]
            await conn.executemany(INSERT_ANCHOR, [
                (a.chain_id, a.seq, a.hash, keyed.anchor_mac(key, a.chain_id, a.seq, a.hash))
                for a in anchors])
    heads = [Anchor(w.chain_id, w.last_seq, w.last_hash) for w in report.chains
             if w.last_seq > 0]
    return anchors, heads


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "archomata audit"})


async def run_verify(dsn: str, org_id: UUID | None, key: bytes,
                     witness_files: Sequence[str] = ()) -> int:
    """`archomata audit verify`: prints the first broken link of each chain (its org id
    or `none`, and its seq); 1 if any, or if a witness file is not signed by the key."""
    try:
        witness = read_witness(key, witness_files)
    except WitnessError as exc:
        print(f"audit verify: {exc}")
        return 1
    conn = await _connect(dsn)
    try:
        report = await verify(conn, key, org_id, witness)
    finally:
        await conn.close()
    for problem in report.problems():
        print(f"BROKEN {problem}")
    state = f"{len(report.problems())} broken" if report.problems() else "all intact"
    chains = f"{len(report.chains)} chain" + ("" if len(report.chains) == 1 else "s")
    print(f"audit verify: {chains}, {report.entries} entries checked, {state}")
    return 1 if report.problems() else 0


async def run_anchor(dsn: str, before: datetime | None, org_id: UUID | None, key: bytes,
                     output: str | None = None) -> int:
    """`archomata audit anchor`: records anchors before `before` and prints each, and/or
    writes the signed heads to `output`; 1, recording nothing, if a chain is broken."""
    conn = await _connect(dsn)
    try:
        anchors, heads = await record_anchors(conn, key, before, org_id)
    except ChainBroken as exc:
        print(f"audit anchor: refused, a chain does not verify: {exc}")
        return 1
    finally:
        await conn.close()
    report = sys.stderr if output == "-" else sys.stdout  # stdout is then the witness's
    for anchor in anchors:
        print(f"anchor {chain_label(anchor.chain_id)}: seq {anchor.seq} "
              f"hash {anchor.hash.hex()}", file=report)
    if before is not None:
        print(f"audit anchor: {len(anchors)} anchors recorded before {before.isoformat()}",
              file=report)
    if output is not None:
        write_witness(key, [(h.chain_id, h.seq, h.hash) for h in heads], output)
        print(f"audit anchor: {len(heads)} signed heads written to "
              f"{'standard output' if output == '-' else output}", file=report)
    return 0


__all__ = ["NIL", "Report", "chain_arg", "record_anchors", "run_anchor", "run_verify",
           "verify"]
