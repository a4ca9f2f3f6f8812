"""Secrets sealed with the data key (archomata.crypto), one `SealedKind` per kind: how a
blob is bound to its row, how `rotate-data-key` reads and writes every blob of the kind,
and what a blob that does not open answers at request time.

    CREDENTIALS (archomata/trading/credentials.py)  MT5 account credentials, per account
    TOTP        (archomata/identity/mfa/sealing.py)  a user's TOTP secret, per user

    blob = TOTP.seal(data_keys, user_id, secret)
    secret = TOTP.open(data_keys, user_id, blob)   # SecretUnavailable (503) if it does not

A blob that does not open (sealed under a key no longer configured, tampered with, moved
to another row) is the operator's to mend, not the caller's fault and not a crash: 503
`secret_unavailable`, and one log line naming the kind, the row and the key id (never the
secret). `archomata rotate-data-key` re-seals every kind it lists (ops/cli_rotate.py) in
one transaction: a new kind is one more entry there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from archomata.crypto import DataKeys, DecryptionError, UnknownKeyError, key_id_of
from archomata.db import Tx, system_tx
from archomata.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# For the OpenAPI document of a route that opens a stored secret (`@doc(problems=...)`).
PROBLEMS = {503: "`secret_unavailable`: a stored secret does not open (the operator is told "
                 "which); never a 500"}


class SecretUnavailable(ServiceUnavailable):
    """A stored secret the service cannot open: the operator must mend it (a former data
    key to configure again, or the secret to set anew)."""

    default_code = "secret_unavailable"


@dataclass(frozen=True, slots=True)
class SealedKind:
    name: str
    associated_data: Callable[[UUID], bytes]  # binds a blob to its row
    # Every blob of the kind, by row id, locked (for rotation, in a system transaction),
    # and the re-sealed ones written back in one statement.
    stored: Callable[[Tx], Awaitable[list[tuple[UUID, bytes]]]]
    store: Callable[[Tx, list[tuple[UUID, bytes]]], Awaitable[None]]

    def seal(self, data_keys: DataKeys, row_id: UUID, plaintext: bytes) -> bytes:
        return data_keys.encrypt(plaintext, self.associated_data(row_id))

    def open(self, data_keys: DataKeys, row_id: UUID, blob: bytes) -> bytes:
        """Dangerous: the plaintext. SecretUnavailable (logged for the operator) when the
        blob does not open."""
        try:
            return data_keys.decrypt(blob, self.associated_data(row_id))
        except DecryptionError as exc:
            log.error("a stored secret does not open", extra={
                "kind": self.name, "row_id": str(row_id), "key_id": _key_id(blob),
                "reason": "unknown key" if isinstance(exc, UnknownKeyError) else
                          "does not authenticate (tampered with, or moved from another row)"})
            raise SecretUnavailable("A stored secret cannot be opened; the operator has been "
                                    "told.") from None


def _key_id(blob: bytes) -> str | None:
    try:
        return key_id_of(blob)
    except DecryptionError:
        return None


@dataclass(frozen=True, slots=True)
class Rotation:
    kind: str
    resealed: int
    stored: int
    unreadable: list[UUID]  # under a configured key, yet they do not open: tampered or moved


async def rotate_all(pool: asyncpg.Pool, data_keys: DataKeys,
                     kinds: Sequence[SealedKind]) -> list[Rotation]:
    """Re-seals every stored blob of every kind not sealed under the current key, in one
    transaction. A blob under a key that is not configured stops it all (UnknownKeyError,
    nothing changed); one that fails to open under its known key is skipped and named."""
    async with system_tx(pool) as tx:
        return [await _rotate(tx, data_keys, kind) for kind in kinds]


async def _rotate(tx: Tx, data_keys: DataKeys, kind: SealedKind) -> Rotation:
    stored = await kind.stored(tx)
    resealed, unreadable = [], []
    for row_id, blob in stored:
        try:
            if data_keys.needs_rotation(blob):
                resealed.append((row_id, data_keys.reseal(blob, kind.associated_data(row_id))))
        except UnknownKeyError as exc:
            raise UnknownKeyError(f"{kind.name} of {row_id}: {exc}") from None
        except DecryptionError:
            unreadable.append(row_id)
    await kind.store(tx, resealed)
    return Rotation(kind.name, len(resealed), len(stored), unreadable)
