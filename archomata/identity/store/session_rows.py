"""Sessions as PostgreSQL keeps them beside Redis (sql/012): what survives Redis losing
its data. One statement each, at most one per login, refresh, switch and logout, in a
transaction scoped to the session's user (row-level security: a person's rows only); the
hot path never reads them (only the rebuild does, see revocation.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import asyncpg

INSERT = """
    insert into sessions (id, user_id, org_id, created_at, last_used_at, ip, user_agent,
                          expires_at, current_hash, rotated_at, amr, mfa_at)
    values ($1, $2, $3, $4, $4, $5, $6, $7, $8, $4, $9, $10)
"""
# Only forward: from the parent to its successor, or the same again (a retry, another
# tab). A write that finds the family further along changes nothing; one that finds it
# revoked (or never written) changes nothing either, and the rotation is refused.
ROTATED = """
    update sessions set current_hash = $2, parent_hash = $3, successor_sealed = $4,
                        rotated_at = $5, last_used_at = $5, ip = $6, user_agent = $7,
                        org_id = coalesce($8, org_id)
    where id = $1 and revoked_at is null and current_hash in ($2, $3)
    returning true
"""
IS_LIVE = "select exists (select 1 from sessions where id = $1 and revoked_at is null)"
MOVED = "update sessions set org_id = $2 where id = $1 and revoked_at is null"
PROVEN = "update sessions set amr = $2, mfa_at = $3 where id = $1 and revoked_at is null"
FORGOTTEN = """
    update sessions set amr = split_part(amr, ',', 1), mfa_at = null
    where user_id = $1 and revoked_at is null
"""
REVOKED = """
    update sessions set revoked_at = now() where id = any($1::uuid[]) and revoked_at is null
"""
# One family ended: whether this write ended it (false: it was ended already, or PostgreSQL
# never had it). `user_id` too: a person's transaction names only their own.
ENDED_ONE = """
    update sessions set revoked_at = now()
    where id = $1 and user_id = $2 and revoked_at is null
    returning true
"""
REVOKED_FOR_USER = """
    update sessions set revoked_at = now()
    where user_id = $1 and ($2::uuid is null or id <> $2) and revoked_at is null
"""
LIVE = """
    select id, user_id, org_id, created_at, last_used_at, ip, user_agent, expires_at,
           current_hash, parent_hash, rotated_at, amr, mfa_at, successor_sealed
    from sessions where revoked_at is null and expires_at > $1
"""


ENDED = "select id from sessions where revoked_at is not null and expires_at > $1"


@dataclass(frozen=True, slots=True)
class Session:
    """A session (a refresh-token family), as Redis and PostgreSQL both keep it. A view
    read from Redis names no hashes; the rebuild's, read here, has them all."""

    id: UUID
    user_id: UUID
    org_id: UUID | None
    created_at: float
    last_used_at: float
    ip: str
    user_agent: str
    expires_at: float
    # The issue instant of access tokens minted from this view (see session_scripts); 0
    # for a view only read (a listing, the rebuild), which mints nothing.
    issued_us: int = 0
    amr: str = "pwd"  # how it was proven, comma separated: its tokens' `amr`
    mfa_at: float | None = None  # when its second factor was, if it was: their `mfa_at`
    # The family's token chain (hashes, the successor sealed), as the rebuild restores it.
    current_hash: str | None = None
    parent_hash: str | None = None
    rotated_at: float | None = None
    successor_sealed: str | None = None


async def _execute(door: UserDoor, user_id: UUID, sql: str, *args: object) -> None:
    async with door(user_id) as tx:  # the door translates database errors (db_errors)
        await tx.execute(sql, *args)


async def insert(door: UserDoor, sid: UUID, user_id: UUID, org_id: UUID | None,
                 now: float, ip: str, user_agent: str, expires_at: float,
                 current_hash: str, amr: str, mfa_at: float | None) -> None:
    await _execute(door, user_id, INSERT, sid, user_id, org_id, now, ip, user_agent,
                   expires_at, current_hash, amr, mfa_at)


async def rotated(door: UserDoor, user_id: UUID, sid: UUID, current_hash: str,
                  parent_hash: str, successor_sealed: str, at: float, ip: str,
                  user_agent: str, org_id: UUID | None) -> bool:
    """Records a rotation (or the same one again); False when PostgreSQL holds the family
    as ended (or never had it): the rotation must then be refused."""
    async with door(user_id) as tx:
        if await tx.fetchval(ROTATED, sid, current_hash, parent_hash, successor_sealed, at,
                             ip, user_agent, org_id):
            return True
        return bool(await tx.fetchval(IS_LIVE, sid))  # live, and further along already


async def moved(door: UserDoor, user_id: UUID, sid: UUID, org_id: UUID) -> None:
    await _execute(door, user_id, MOVED, sid, org_id)


async def proven(door: UserDoor, user_id: UUID, sid: UUID, amr: str, mfa_at: float) -> None:
    await _execute(door, user_id, PROVEN, sid, amr, mfa_at)


async def forgotten(tx: Tx, user_id: UUID) -> None:
    """Every live session of the user as if no second factor had been proven (in the
    transaction that turns the factor off)."""
    await tx.execute(FORGOTTEN, user_id)


async def revoked(door: UserDoor, user_id: UUID, sids: Sequence[UUID]) -> None:
    if sids:
        await _execute(door, user_id, REVOKED, list(sids))


async def ended_one(tx: Tx, user_id: UUID, sid: UUID) -> bool:
    """Ends one family of the user in `tx`; whether this ended it (False: ended already,
    or never written)."""
    return bool(await tx.fetchval(ENDED_ONE, sid, user_id))


async def revoked_for_user(tx: Tx, user_id: UUID, keep: UUID | None) -> None:
    """In the caller's transaction (the change that ends them commits with it, on the one
    connection it holds), which must see the user's rows: row-level security would
    otherwise leave them alive without a word."""
    reaches(tx, user_id)
    await tx.execute(REVOKED_FOR_USER, user_id, keep)


def reaches(tx: Tx, user_id: UUID) -> None:
    """ValueError unless `tx` sees the user's rows (row-level security would otherwise
    leave them alive without a word)."""
    if not (tx.platform or tx.user_id == user_id):
        raise ValueError("the transaction's scope does not reach this user's sessions")


class Tx(Protocol):
    """A transaction (archomata.db.Tx; not imported: the sessions store sits below the
    doors, which it is handed)."""

    user_id: UUID | None
    platform: bool

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...

    async def execute(self, sql: str, *args: Any) -> str: ...


class UserDoor(Protocol):
    """A transaction scoped to one user (and, when given, to the org whose audit log it
    writes to), opened by the door the app hands the store."""

    def __call__(self, user_id: UUID, org_id: UUID | None = None, /
                 ) -> AbstractAsyncContextManager[Tx]: ...


async def live(tx: Tx) -> list[Session]:
    """Every session neither revoked nor expired, for the rebuild (in its transaction)."""
    return [Session(**r) for r in await tx.fetch(LIVE, time.time())]


async def ended(tx: Tx) -> list[UUID]:
    """Every session revoked before it expired, for the rebuild: a server that lost writes
    may hold some of them still."""
    return [r["id"] for r in await tx.fetch(ENDED, time.time())]
