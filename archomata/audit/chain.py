"""The audit log's hash chains, walked: `archomata audit verify` and `audit anchor`.

Each org's entries form a chain, and entries without an org one more (sql/004): entry
`seq` n carries the hash of entry n-1 (`prev_hash`) and its own `hash`, SHA-256 over a
canonical serialisation. This module recomputes every hash in Python from PostgreSQL's
text renderings of the columns, so a rewritten SQL function cannot vouch for itself.

Verification reports the first broken link of each chain: an entry whose content no
longer matches its hash (edited), a seq that skips (deleted), an entry that does not
link to the one before it (reordered, or inserted behind the trigger's back), a chain
head that runs past the last entry (cut off the end), or an entry that contradicts an
anchor. Anchors (`audit anchor --before T`) are checkpoints recorded before old entries
are archived; a chain whose first entries are gone resumes from the anchor just below
what remains (docs/audit-retention.md).

Run as the schema owner (ARCHOMATA_DATABASE_OWNER_URL): the runtime role cannot read
the chain heads.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

NIL = UUID(int=0)  # the chain of entries without an org
GENESIS = bytes(32)  # prev_hash of the first entry of a chain
VERSION = b"archomata-audit-v1"
PREFETCH = 2000

# The text renderings audit_entry_hash() serialises, in its order (after seq/prev_hash).
_TEXT_FIELDS = ("org_text", "seq_text", "prev_text", "id_text", "occurred_text", "actor_type",
                "actor_text", "action", "resource_type", "resource_id", "ip_text",
                "user_agent", "request_id", "details_text")

ENTRIES = """
    select id, coalesce(org_id, '00000000-0000-0000-0000-000000000000') as chain_id,
           seq, prev_hash, hash,
           org_id::text as org_text, seq::text as seq_text,
           encode(prev_hash, 'hex') as prev_text, id::text as id_text,
           to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               as occurred_text,
           actor_type, actor_id::text as actor_text, action, resource_type, resource_id,
           ip::text as ip_text, user_agent, request_id, details::text as details_text
    from audit_log
"""
# Both orders are served by audit_log_chain_idx (org_id, seq); nulls sort last.
ALL_ENTRIES = ENTRIES + " order by org_id, seq"
ORG_ENTRIES = ENTRIES + " where org_id = $1 order by seq"
PLATFORM_ENTRIES = ENTRIES + " where org_id is null order by seq"
HEADS = "select chain_id, seq, hash from audit_chain_heads"
ANCHORS = "select chain_id, seq, hash from audit_anchors"


def entry_hash(row: Any) -> bytes:
    """SHA-256 of the canonical serialisation: each field `~` when NULL, else
    `<UTF-8 byte length>:<text>`, after a version tag. Mirrors audit_entry_hash()."""
    out = bytearray(VERSION)
    for name in _TEXT_FIELDS:
        value = row[name]
        if value is None:
            out += b"~"
        else:
            data = value.encode()
            out += b"%d:%b" % (len(data), data)
    return hashlib.sha256(out).digest()


def chain_label(chain_id: UUID) -> str:
    return "entries without an org" if chain_id == NIL else f"org {chain_id}"


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of a chain."""

    chain_id: UUID
    seq: int
    entry_id: UUID | None
    reason: str

    def describe(self) -> str:
        entry = f" (entry {self.entry_id})" if self.entry_id else ""
        return f"{chain_label(self.chain_id)}: seq {self.seq}{entry}: {self.reason}"


@dataclass
class ChainWalk:
    """Feeds one chain's entries in seq order; stops at the first broken link."""

    chain_id: UUID
    anchors: dict[int, bytes] = field(default_factory=dict)
    entries: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS
    last_id: UUID | None = None
    broken: Break | None = None

    def _break(self, seq: int, entry_id: UUID | None, reason: str) -> None:
        self.broken = Break(self.chain_id, seq, entry_id, reason)

    def _start(self, row: Any) -> bool:
        """Where the walk starts: the chain's beginning, or the anchor just below the
        first entry left after an archive."""
        seq = row["seq"]
        if seq == 1:
            return True
        anchor = self.anchors.get(seq - 1)
        if anchor is None:
            self._break(1, None, f"entries 1 to {seq - 1} are missing and no anchor was "
                                 f"recorded at seq {seq - 1} (first entry left: {row['id']})")
            return False
        self.last_seq, self.last_hash = seq - 1, anchor
        return True

    def feed(self, row: Any) -> None:
        if self.broken is not None:
            return
        if self.entries == 0 and not self._start(row):
            return
        seq, entry_id = row["seq"], row["id"]
        expected = self.last_seq + 1
        if seq != expected:
            missing = _missing(expected, seq - 1) if seq > expected else \
                f"seq {seq} comes after seq {self.last_seq}, so it is"
            self._break(expected, None, f"{missing} missing (deleted?); the next entry "
                                        f"present is seq {seq}, {entry_id}")
        elif bytes(row["prev_hash"]) != self.last_hash:
            self._break(seq, entry_id, "does not link to the entry before it "
                                       "(reordered, replaced or inserted out of band)")
        elif entry_hash(row) != bytes(row["hash"]):
            self._break(seq, entry_id, "content does not match its hash (edited)")
        elif seq in self.anchors and self.anchors[seq] != bytes(row["hash"]):
            self._break(seq, entry_id, "differs from the anchor recorded at this seq")
        else:
            self.entries += 1
            self.last_seq, self.last_hash, self.last_id = seq, bytes(row["hash"]), entry_id

    def finish(self, head: tuple[int, bytes] | None) -> None:
        """Checks the chain head: it names the last entry ever appended."""
        if self.broken is not None:
            return
        if head is None:
            if self.entries:
                self._break(self.last_seq, self.last_id, "the chain head row is missing")
            return
        head_seq, head_hash = head
        if self.entries == 0 and head_seq > 0 and self.anchors.get(head_seq) == head_hash:
            return  # every entry archived; the anchor vouches for the head
        if head_seq > self.last_seq:
            self._break(self.last_seq + 1, None,
                        f"{_missing(self.last_seq + 1, head_seq)} missing from the end "
                        f"(the chain head says seq {head_seq})")
        elif head_seq < self.last_seq:
            self._break(head_seq + 1, None, f"entries after seq {head_seq} were appended "
                                            "behind the trigger's back (beyond the chain head)")
        elif head_hash != self.last_hash:
            self._break(head_seq, self.last_id, "the chain head's hash differs from this entry")


def _missing(first: int, last: int) -> str:
    return f"entry seq {first} is" if first == last else f"entries {first} to {last} are"


@dataclass(frozen=True, slots=True)
class Report:
    chains: list[ChainWalk]

    @property
    def entries(self) -> int:
        return sum(c.entries for c in self.chains)

    @property
    def breaks(self) -> list[Break]:
        return [c.broken for c in self.chains if c.broken is not None]


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


async def _walk(conn: asyncpg.Connection, org_id: UUID | None) -> Report:
    heads = {r["chain_id"]: (r["seq"], bytes(r["hash"])) for r in await conn.fetch(HEADS)}
    anchors: dict[UUID, dict[int, bytes]] = {}
    for r in await conn.fetch(ANCHORS):
        anchors.setdefault(r["chain_id"], {})[r["seq"]] = bytes(r["hash"])
    walks: dict[UUID, ChainWalk] = {}
    async for row in _rows(conn, org_id):
        chain = row["chain_id"]
        walk = walks.get(chain)
        if walk is None:
            walk = walks[chain] = ChainWalk(chain, anchors.get(chain, {}))
        walk.feed(row)
    wanted: Callable[[UUID], bool] = (lambda _: True) if org_id is None \
        else (lambda chain: chain == org_id)
    for chain in heads.keys() - walks.keys():
        if wanted(chain):
            walks[chain] = ChainWalk(chain, anchors.get(chain, {}))
    for chain, walk in walks.items():
        walk.finish(heads.get(chain))
    return Report(sorted(walks.values(), key=lambda w: (w.chain_id == NIL, str(w.chain_id))))


async def _see_everything(conn: asyncpg.Connection) -> None:
    # The owner may lack BYPASSRLS; FORCE ROW LEVEL SECURITY then applies to it too.
    await conn.execute("select set_config('app.platform', 'on', true)")


async def verify(conn: asyncpg.Connection, org_id: UUID | None = None) -> Report:
    """Walks every chain (or one org's; NIL for entries without an org) in one snapshot,
    so that entries committed meanwhile cannot make heads and entries disagree."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await _see_everything(conn)
        return await _walk(conn, org_id)


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
    insert into audit_anchors (chain_id, seq, hash) values ($1, $2, $3)
    on conflict (chain_id, seq) do nothing
"""


class ChainBroken(Exception):
    """`audit anchor` refuses to vouch for a chain that does not verify."""


async def record_anchors(conn: asyncpg.Connection, before: datetime,
                         org_id: UUID | None = None) -> list[Anchor]:
    """Verifies the chains, then records for each the last entry before `before` as an
    anchor: entries up to it may then be archived (docs/audit-retention.md)."""
    async with conn.transaction(isolation="repeatable_read"):
        await _see_everything(conn)
        report = await _walk(conn, org_id)
        if report.breaks:
            raise ChainBroken("; ".join(b.describe() for b in report.breaks))
        rows = await conn.fetch(LAST_BEFORE, before, org_id)
        anchors = [Anchor(r["chain_id"], r["seq"], bytes(r["hash"])) for r in rows]
        await conn.executemany(INSERT_ANCHOR, [(a.chain_id, a.seq, a.hash) for a in anchors])
    return anchors


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"application_name": "archomata audit"})


async def run_verify(dsn: str, org_id: UUID | None) -> int:
    """`archomata audit verify`: prints the first broken link of each chain; 1 if any."""
    conn = await _connect(dsn)
    try:
        report = await verify(conn, org_id)
    finally:
        await conn.close()
    for broken in report.breaks:
        print(f"BROKEN {broken.describe()}")
    state = f"{len(report.breaks)} broken" if report.breaks else "all intact"
    chains = f"{len(report.chains)} chain" + ("" if len(report.chains) == 1 else "s")
    print(f"audit verify: {chains}, {report.entries} entries checked, {state}")
    return 1 if report.breaks else 0


async def run_anchor(dsn: str, before: datetime, org_id: UUID | None) -> int:
    """`archomata audit anchor`: prints each anchor recorded; 1 if a chain is broken."""
    conn = await _connect(dsn)
    try:
        anchors = await record_anchors(conn, before, org_id)
    except ChainBroken as exc:
        print(f"audit anchor: refused, a chain does not verify: {exc}")
        return 1
    finally:
        await conn.close()
    for anchor in anchors:
        print(f"anchor {chain_label(anchor.chain_id)}: seq {anchor.seq} hash {anchor.hash.hex()}")
    print(f"audit anchor: {len(anchors)} anchors recorded before {before.isoformat()}")
    return 0


def chain_arg(text: str) -> UUID:
    """`--org`: an org id, or `none` for the chain of entries without an org."""
    return NIL if text.lower() == "none" else UUID(text)
