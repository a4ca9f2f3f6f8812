"""A user's second factor as PostgreSQL keeps it (sql/013): the TOTP secret sealed with the
data key, the last time step accepted, and recovery-code digests. Each statement runs in
a transaction scoped to the user (row-level security: a person's rows only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from archomata.db import Tx


@dataclass(frozen=True, slots=True)
class Totp:
    secret_sealed: bytes
    confirmed_at: datetime | None
    last_step: int


async def totp(tx: Tx, user_id: UUID) -> Totp | None:
    row = await tx.fetchrow(
        "select secret_sealed, confirmed_at, last_step from mfa_totp where user_id = $1",
        user_id)
    return Totp(bytes(row["secret_sealed"]), row["confirmed_at"], row["last_step"]) \
        if row else None


async def enabled(tx: Tx, user_id: UUID) -> bool:
    """Whether the user has a confirmed second factor: every way in then asks for it."""
    return bool(await tx.fetchval(
        "select exists (select 1 from mfa_totp where user_id = $1 and confirmed_at is not null)",
        user_id))


async def start_enrolment(tx: Tx, user_id: UUID, secret_sealed: bytes) -> bool:
    """A new unconfirmed secret, replacing an unconfirmed one; False (nothing written)
    when a confirmed one exists."""
    written = await tx.fetchval("""
        insert into mfa_totp (user_id, secret_sealed) values ($1, $2)
        on conflict (user_id) do update set secret_sealed = excluded.secret_sealed,
                                            last_step = 0, created_at = now()
            where mfa_totp.confirmed_at is null
        returning true""", user_id, secret_sealed)
    return bool(written)


async def take_step(tx: Tx, user_id: UUID, step: int, *, confirming: bool = False) -> bool:
    """Records `step` as the last accepted, if it is later than the last one (and, when
    `confirming`, marks the secret confirmed): False when another request took this code
    or a later one first."""
    taken = await tx.fetchval("""
        update mfa_totp set last_step = $2,
                            confirmed_at = case when $3 then now() else confirmed_at end
        where user_id = $1 and last_step < $2
          and (confirmed_at is not null) = not $3
        returning true""", user_id, step, confirming)
    return bool(taken)


async def replace_recovery_codes(tx: Tx, user_id: UUID, digests: Sequence[str]) -> None:
    await tx.execute("delete from mfa_recovery_codes where user_id = $1", user_id)
    await tx.execute("""
        insert into mfa_recovery_codes (user_id, code_hash)
        select $1, unnest($2::text[])""", user_id, list(digests))


async def use_recovery_code(tx: Tx, user_id: UUID, digest: str) -> bool:
    """Spends the code: False when it is unknown or spent already."""
    used = await tx.fetchval("""
        update mfa_recovery_codes set used_at = now()
        where user_id = $1 and code_hash = $2 and used_at is null
        returning true""", user_id, digest)
    return bool(used)


async def recovery_codes_left(tx: Tx, user_id: UUID) -> int:
    left: int = await tx.fetchval(
        "select count(*) from mfa_recovery_codes where user_id = $1 and used_at is null",
        user_id)
    return left


async def remove(tx: Tx, user_id: UUID) -> bool:
    """The confirmed factor and every recovery code gone: False when there was none."""
    removed = await tx.fetchval(
        "delete from mfa_totp where user_id = $1 and confirmed_at is not null returning true",
        user_id)
    await tx.execute("delete from mfa_recovery_codes where user_id = $1", user_id)
    return bool(removed)


ALL_SEALED = "select user_id, secret_sealed from mfa_totp order by user_id for update"
SET_SEALED_MANY = """
    update mfa_totp t set secret_sealed = r.blob
    from unnest($1::uuid[], $2::bytea[]) as r(user_id, blob) where t.user_id = r.user_id
"""


async def all_sealed(tx: Tx) -> list[tuple[UUID, bytes]]:
    """Every TOTP secret, confirmed or pending, locked, for re-sealing under a new data
    key (a system transaction: every user's rows)."""
    return [(r["user_id"], bytes(r["secret_sealed"])) for r in await tx.fetch(ALL_SEALED)]


async def set_sealed_many(tx: Tx, blobs: list[tuple[UUID, bytes]]) -> None:
    if blobs:
        await tx.execute(SET_SEALED_MANY, [i for i, _ in blobs], [b for _, b in blobs])
