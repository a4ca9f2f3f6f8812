"""What the session scripts (archomata.identity.session_scripts) answer, read into values:
a session, a rotation's outcome, a family ended; and the family's own refresh limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from archomata.config import RateLimit
from archomata.gate.ratelimit import decide
from archomata.identity.store.session_rows import Session

# Refreshes (and org switches) of one session: at most this many a minute (contract §5,
# ARCHOMATA_RATE_LIMIT_REFRESH), beside the per-IP bucket.
FAMILY_LIMIT = RateLimit(10, 60)


class Outcome(StrEnum):
    ROTATED = "rotated"
    LIMITED = "limited"    # the family's own refresh limit: nothing changed, 429
    SAME = "same"          # a parent inside the grace window: the current successor again
    REUSE = "reuse"        # an older token, or the parent too late: family revoked
    REVOKED = "revoked"    # the family is gone (logout, deleted, expired)
    FOREIGN = "foreign"    # a live token of another family than the one asked for
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: Outcome
    session: Session | None = None
    token: str | None = None
    # For a detected reuse: whose family was revoked, to audit it in the right org.
    revoked_user_id: UUID | None = None
    revoked_org_id: UUID | None = None
    revoked_session_id: UUID | None = None


def refuse_family(hit: Sequence[Any]) -> None:
    """RateLimited, for the family's limit as a script's sliding window left it."""
    _, previous, current, elapsed = (int(value) for value in hit)
    decide(False, previous, current, elapsed, FAMILY_LIMIT).raise_if_refused("session_family")


def unready(result: object) -> bool:
    """A script's answer that Redis has lost its data and is not yet rebuilt."""
    return isinstance(result, bytes | str) and text(result) == "unready"


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


Fields = dict[str, str]


def fields_of(data: dict[bytes, bytes] | dict[str, str] | list[bytes]) -> Fields:
    if isinstance(data, list):  # a script's HGETALL: field, value, field, value...
        data = dict(zip(data[::2], data[1::2], strict=True))
    return {text(k): text(v) for k, v in data.items()}


def session_of(sid: str, data: dict[bytes, bytes] | dict[str, str] | list[bytes],
             issued_us: int = 0) -> Session | None:
    fields = fields_of(data)
    if not fields.get("user_id") or not fields.get("current"):
        return None
    return Session(UUID(sid), UUID(fields["user_id"]),
                   UUID(fields["org_id"]) if fields.get("org_id") else None,
                   float(fields["created_at"]), float(fields["last_used_at"]),
                   fields.get("ip", ""), fields.get("user_agent", ""),
                   float(fields["expires_at"]), issued_us, fields.get("amr") or "pwd",
                   float(fields["mfa_at"]) if fields.get("mfa_at") else None)


@dataclass(frozen=True, slots=True)
class Ended:
    """A family `end` revoked: whose it was, and whether the token that named it was a
    replayed one (a reuse, to audit as such)."""

    session_id: UUID
    user_id: UUID
    org_id: UUID | None
    stale_token: bool


# What a flow writes in the transaction that ends a family in PostgreSQL (its audit entry),
# run only when that transaction is what ended it: a retry, or a race lost, writes none.
# Its transaction is the store's own (archomata.db.Tx in the app; not named here: the
# sessions store sits below archomata.db's transactions, which it is handed).
Record = Callable[[Any, Ended], Awaitable[None]]
