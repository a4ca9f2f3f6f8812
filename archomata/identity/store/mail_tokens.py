"""Single-use, expiring tokens sent by mail, stored as SHA-256 hashes only."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum
from uuid import UUID

from archomata.db import Tx


class Purpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


INSERT = """
    insert into mail_tokens (token_hash, user_id, purpose, expires_at)
    values ($1, $2, $3, now() + make_interval(secs => $4))
"""


async def issue(tx: Tx, user_id: UUID, purpose: Purpose, ttl_seconds: int) -> str:
    token = secrets.token_urlsafe(32)
    await tx.execute(INSERT, digest(token), user_id, purpose.value, float(ttl_seconds))
    return token


CONSUME = """
    update mail_tokens set used_at = now()
    where token_hash = $1 and purpose = $2 and used_at is null and expires_at > now()
    returning user_id
"""


async def consume(tx: Tx, token: str, purpose: Purpose) -> UUID | None:
    """The user the token was for, marking it used; None if unknown, used or expired."""
    user_id: UUID | None = await tx.fetchval(CONSUME, digest(token), purpose.value)
    return user_id


PEEK = """
    select user_id from mail_tokens
    where token_hash = $1 and purpose = $2 and used_at is null and expires_at > now()
"""


async def peek(tx: Tx, token: str, purpose: Purpose) -> UUID | None:
    """The user the token would be accepted for, without using it up."""
    user_id: UUID | None = await tx.fetchval(PEEK, digest(token), purpose.value)
    return user_id


RETIRE = """
    update mail_tokens set used_at = now()
    where user_id = $1 and purpose = $2 and used_at is null
"""


LOCK_OPEN = """
    select 1 from mail_tokens where user_id = $1 and used_at is null for update
"""


async def lock_open(tx: Tx, user_id: UUID) -> None:
    """Locks the user's unspent links before a write to their row that a link's use
    races: a reset confirm spends its link, then writes the row, and whoever does both
    must take them in that order too, or the two deadlock."""
    await tx.execute(LOCK_OPEN, user_id)


async def retire_all(tx: Tx, user_id: UUID, purpose: Purpose) -> None:
    """Older links die when a newer one is sent or one is used."""
    await tx.execute(RETIRE, user_id, purpose.value)
