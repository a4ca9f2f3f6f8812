"""MT5 account credentials at rest: JSON sealed under the data key, bound to their account
(the account id is the associated data, so a blob moved to another row does not open)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from archomata.crypto import DataKeys, DecryptionError, UnknownKeyError
from archomata.db import system_tx
from archomata.trading.store import accounts


def associated_data(account_id: UUID) -> bytes:
    return f"account:{account_id}:credentials".encode()


def seal(data_keys: DataKeys, account_id: UUID, credentials: dict[str, Any]) -> bytes:
    plaintext = json.dumps(credentials, separators=(",", ":")).encode()
    return data_keys.encrypt(plaintext, associated_data(account_id))


def open_sealed(data_keys: DataKeys, account_id: UUID, blob: bytes) -> dict[str, Any]:
    """Dangerous: the plaintext credentials. Only for the agent the account is assigned to."""
    credentials: dict[str, Any] = json.loads(data_keys.decrypt(blob, associated_data(account_id)))
    return credentials


def reseal(data_keys: DataKeys, account_id: UUID, blob: bytes) -> bytes:
    """The same credentials sealed under the current data key."""
    return data_keys.reseal(blob, associated_data(account_id))


@dataclass(frozen=True, slots=True)
class Rotation:
    resealed: int
    stored: int
    unreadable: list[UUID]  # under a configured key, yet they do not open: tampered or moved


async def rotate_all(pool: asyncpg.Pool, data_keys: DataKeys) -> Rotation:
    """Re-seals every stored credential not sealed under the current key, in one
    transaction. A blob under a key that is not configured stops it all (UnknownKeyError,
    nothing changed); one that fails to open under its known key is skipped and named."""
    async with system_tx(pool) as tx:
        stored = await accounts.all_credentials(tx)
        resealed, unreadable = [], []
        for account_id, blob in stored:
            if not data_keys.needs_rotation(blob):
                continue
            try:
                resealed.append((account_id, reseal(data_keys, account_id, blob)))
            except UnknownKeyError:
                raise
            except DecryptionError:
                unreadable.append(account_id)
        await accounts.set_credentials_many(tx, resealed)
    return Rotation(len(resealed), len(stored), unreadable)
