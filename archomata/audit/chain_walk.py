"""One audit chain walked entry by entry (archomata/audit/chain.py feeds it): each link,
hash or MAC, anchor, witnessed head, the unkeyed segment's sealed end, and search terms,
stopping at the first broken link."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from archomata.audit import keyed
from archomata.audit.witness import chain_label

GENESIS = bytes(32)  # prev_hash of the first entry of a chain
VERSION = b"archomata-audit-v1"
# The text renderings audit_entry_hash() serialises, in its order (after seq/prev_hash).
_TEXT_FIELDS = ("org_text", "seq_text", "prev_text", "id_text", "occurred_text", "actor_type",
                "actor_text", "action", "resource_type", "resource_id", "ip_text",
                "user_agent", "request_id", "details_text")


def entry_hash(row: Any) -> bytes:
    """The unkeyed segment's hash (sql/004): SHA-256 of the canonical serialisation, each
    field `~` when NULL, else `<UTF-8 byte length>:<text>`, after a version tag. Mirrors
    audit_entry_hash()."""
    out = bytearray(VERSION)
    for name in _TEXT_FIELDS:
        value = row[name]
        if value is None:
            out += b"~"
        else:
            data = value.encode()
            out += b"%d:%b" % (len(data), data)
    return hashlib.sha256(out).digest()


def entry_mac(key: bytes, row: Any) -> bytes:
    """A keyed entry's MAC, from the values the database returns (keyed.entry_fields)."""
    values = dict(row.items())
    values["id"], values["prev_hash"] = row["id"], bytes(row["prev_hash"])
    return keyed.entry_mac(key, keyed.entry_fields(values))


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken link of a chain."""

    chain_id: UUID
    seq: int
    entry_id: UUID | None
    reason: str

    def describe(self) -> str:
        entry = f" (entry {self.entry_id})" if self.entry_id else ""
        return f"{chain_label(self.chain_id)} seq {self.seq}{entry}: {self.reason}"


@dataclass
class ChainWalk:
    """Feeds one chain's entries in seq order; stops at the first broken link."""

    chain_id: UUID
    key: bytes
    anchors: dict[int, bytes] = field(default_factory=dict)
    legacy: tuple[int, bytes] = (0, GENESIS)  # the unkeyed segment's last seq and hash
    witness: dict[int, bytes] = field(default_factory=dict)
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
        if seq - 1 == self.legacy[0] and anchor != self.legacy[1]:
            self._break(seq - 1, None, "the anchor differs from the unkeyed segment's end "
                                       "the keyed manifest sealed")
            return False
        if self.witness.get(seq - 1, anchor) != anchor:
            self._break(seq - 1, None, "the anchor differs from the head the witness "
                                       "file signed")
            return False
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
        elif not keyed.same(self._expected(row), bytes(row["hash"])):
            self._break(seq, entry_id, "content does not match its hash (edited)"
                        if seq <= self.legacy[0] else
                        "content does not match its MAC under ARCHOMATA_AUDIT_KEY (edited, "
                        "re-hashed or written without the key)")
        elif seq in self.anchors and self.anchors[seq] != bytes(row["hash"]):
            self._break(seq, entry_id, "differs from the anchor recorded at this seq")
        elif seq == self.legacy[0] and self.legacy[1] != bytes(row["hash"]):
            self._break(seq, entry_id, "the unkeyed segment does not end in the hash the "
                                       "keyed manifest sealed (rewritten)")
        elif seq in self.witness and self.witness[seq] != bytes(row["hash"]):
            self._break(seq, entry_id, "differs from the head the witness file signed")
        elif row["missing_terms"]:
            self._break(seq, entry_id, "search terms missing, so `q` does not find it: "
                                       + " ".join(row["missing_terms"]))
        else:
            self.entries += 1
            self.last_seq, self.last_hash, self.last_id = seq, bytes(row["hash"]), entry_id

    def _expected(self, row: Any) -> bytes:
        return entry_hash(row) if row["seq"] <= self.legacy[0] else entry_mac(self.key, row)

    def finish(self, head: tuple[int, bytes] | None) -> None:
        """Checks the chain head (it names the last entry ever appended) and the witness
        (the database cannot vouch for its own end)."""
        if self.broken is None:
            self._finish_head(head)
        if self.broken is None and self.witness and max(self.witness) > self.last_seq:
            seen = max(self.witness)
            self._break(self.last_seq + 1, None,
                        f"{_missing(self.last_seq + 1, seen)} missing: the witness file "
                        f"signed a head at seq {seen} (cut off the end, or rewritten)")

    def _finish_head(self, head: tuple[int, bytes] | None) -> None:
        if head is None:
            if self.entries:
                self._break(self.last_seq, self.last_id, "the chain head row is missing")
            return
        head_seq, head_hash = head
        if self.entries == 0 and head_seq > 0 and self.anchors.get(head_seq) == head_hash:
            self.last_seq, self.last_hash = head_seq, head_hash
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
