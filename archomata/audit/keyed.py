"""The audit chain's key: ARCHOMATA_AUDIT_KEY, and the MACs made with it.

Each entry's `hash` is HMAC-SHA-256 under the key of its canonical serialisation
(`entry_mac`), which names its chain, seq and the previous entry's hash: an entry edited,
deleted, moved or re-hashed by whoever holds the database no longer verifies without the
key, which lives in the service's environment and never in the database (sql/018).
Anchors and witness lines (`audit anchor`) are signed with it too, each under a tag of
its own so that no MAC of one kind passes for another.

The serialisation is computed twice, by the service from the values it inserts and by
`audit verify` from what the database gives back, so it is built from forms both agree
on: uuids, seq and times as text, the address as Python renders it, and `details` as
canonical JSON of the JSON text PostgreSQL parses (keys sorted, numbers as exact
decimals: jsonb keeps `1.50` and turns `1e2` into `100`, and so does this).

The process's key is installed at start (`install`, from the Config); a command-line
tool that writes entries without one takes it from the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from archomata.config import audit_key

ENTRY_TAG = b"archomata-audit-v2"
ANCHOR_TAG = b"archomata-audit-anchor-v1"
WITNESS_TAG = b"archomata-audit-witness-v1"

_installed: bytes | None = None


def key_from_environment(environ: Mapping[str, str] | None = None) -> bytes:
    """ARCHOMATA_AUDIT_KEY as the Config reads it; ConfigError naming it otherwise."""
    return audit_key(os.environ if environ is None else environ).reveal()


def install(key: bytes) -> None:
    """The key this process writes entries with (the service: from its Config)."""
    global _installed
    _installed = key


def current_key() -> bytes:
    """The installed key, else the environment's (command-line tools); ConfigError
    when there is none: an entry is never written unkeyed."""
    global _installed
    if _installed is None:
        _installed = key_from_environment()
    return _installed


def canonical_ip(text: str | None) -> str | None:
    return None if text is None else str(ipaddress.ip_address(text))


def canonical_time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(text: str) -> str:
    """JSON text in one spelling whatever PostgreSQL or the encoder made of it."""
    return _canonical(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def _canonical(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _canonical(value[k])
                              for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, Decimal):
        # jsonb has no negative zero; `f` writes 1E+2 as 100, as jsonb does.
        return format(value.copy_abs() if value.is_zero() else value, "f")
    return json.dumps(value, ensure_ascii=False)  # str, bool, None


def _serialise(tag: bytes, fields: Iterable[str | None]) -> bytes:
    """Each field `~` when NULL, else `<UTF-8 byte length>:<text>`, after the tag: no two
    different field lists serialise alike."""
    out = bytearray(tag)
    for value in fields:
        if value is None:
            out += b"~"
        else:
            data = value.encode()
            out += b"%d:%b" % (len(data), data)
    return bytes(out)


def _mac(key: bytes, tag: bytes, fields: Iterable[str | None]) -> bytes:
    return hmac.new(key, _serialise(tag, fields), hashlib.sha256).digest()


def entry_mac(key: bytes, fields: Iterable[str | None]) -> bytes:
    """The MAC of an entry given its canonical fields (`ENTRY_FIELDS`' order)."""
    return _mac(key, ENTRY_TAG, fields)


# The canonical fields of an entry, in the order they are MACed.
ENTRY_FIELDS = ("org_id", "seq", "prev_hash", "id", "occurred_at", "actor_type", "actor_id",
                "action", "resource_type", "resource_id", "ip", "user_agent", "request_id",
                "details")


def entry_fields(values: Mapping[str, Any]) -> list[str | None]:
    """Canonical text of each of ENTRY_FIELDS from typed values: uuids, int seq, bytes
    prev_hash, aware datetime, the address and details as JSON text."""
    out: list[str | None] = []
    for name in ENTRY_FIELDS:
        value = values[name]
        if value is None:
            out.append(None)
        elif name == "prev_hash":
            out.append(bytes(value).hex())
        elif name == "occurred_at":
            out.append(canonical_time(value))
        elif name == "ip":
            out.append(canonical_ip(value))
        elif name == "details":
            out.append(canonical_json(value))
        else:
            out.append(str(value))
    return out


def anchor_mac(key: bytes, chain_id: object, seq: int, hash_: bytes) -> bytes:
    return _mac(key, ANCHOR_TAG, (str(chain_id), str(seq), hash_.hex()))


def witness_mac(key: bytes, chain: str, seq: int, hash_hex: str, at: str) -> bytes:
    return _mac(key, WITNESS_TAG, (chain, str(seq), hash_hex, at))


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
