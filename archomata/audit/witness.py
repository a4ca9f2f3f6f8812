"""Witness files: the audit chains' heads signed with ARCHOMATA_AUDIT_KEY, kept outside
the database (`audit anchor --output`), and read back by `audit verify --witness`.

A database can always be cut back, or rolled back whole, to a state that verifies: the
key cannot tell what is gone from the end. A head signed earlier and kept where whoever
holds the database cannot reach (a ticket, WORM storage, another system) can: each of its
entries must still be there, unchanged. One JSON line per chain:
`{"chain": "<org id>|none", "seq": N, "hash": "<hex>", "at": "<when>", "mac": "<hex>"}`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from uuid import UUID

from archomata.audit import keyed

NIL = UUID(int=0)  # the chain of entries without an org

def chain_label(chain_id: UUID) -> str:
    """The chain as `audit verify` prints it: its org id, or `none`."""
    return "none" if chain_id == NIL else str(chain_id)


def chain_arg(text: str) -> UUID:
    """`--org`, a witness line's chain: an org id, or `none` for entries without an org."""
    return NIL if text.lower() == "none" else UUID(text)


Witnessed = dict[UUID, dict[int, bytes]]


class WitnessError(Exception):
    """A witness file that cannot be read, or a line not signed by this key."""


def write_witness(key: bytes, heads: Sequence[tuple[UUID, int, bytes]], output: str) -> None:
    """Each (chain, seq, hash) signed, to `output` (`-`: standard output)."""
    at = datetime.now(UTC).isoformat()
    lines = []
    for chain_id, seq, hash_ in heads:
        chain, hash_hex = chain_label(chain_id), hash_.hex()
        mac = keyed.witness_mac(key, chain, seq, hash_hex, at).hex()
        lines.append(json.dumps({"chain": chain, "seq": seq, "hash": hash_hex,
                                 "at": at, "mac": mac}) + "\n")
    if output == "-":
        _write(sys.stdout, lines)
        return
    partial = Path(output + ".partial")  # renamed once whole: never a half witness
    with partial.open("w") as out:
        _write(out, lines)
    partial.replace(output)


def _write(out: TextIO, lines: list[str]) -> None:
    out.writelines(lines)
    out.flush()


def read_witness(key: bytes, paths: Sequence[str]) -> Witnessed:
    witnessed: Witnessed = {}
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise WitnessError(f"cannot read witness file {path}: {exc.strerror}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                chain, seq, hash_ = _witness_line(key, line, f"{path}:{number}")
                witnessed.setdefault(chain, {})[seq] = hash_
    return witnessed


def _witness_line(key: bytes, line: str, where: str) -> tuple[UUID, int, bytes]:
    try:
        entry = json.loads(line)
        chain, seq, hash_hex, at = entry["chain"], entry["seq"], entry["hash"], entry["at"]
        mac = bytes.fromhex(entry["mac"])
        parsed = (chain_arg(chain), int(seq), bytes.fromhex(hash_hex))
    except (ValueError, KeyError, TypeError):
        raise WitnessError(f"witness line {where} is not a signed head") from None
    if not keyed.same(mac, keyed.witness_mac(key, str(chain), int(seq), str(hash_hex), str(at))):
        raise WitnessError(f"witness line {where} is not signed by this ARCHOMATA_AUDIT_KEY")
    return parsed
