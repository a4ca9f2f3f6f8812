"""MT5 account credentials at rest: JSON sealed under the data key, bound to their account
(the account id is the associated data, so a blob moved to another row does not open).
`archomata rotate-data-key` re-seals them (archomata.sealed)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from archomata.crypto import DataKeys
from archomata.sealed import SealedKind
from archomata.trading.store import accounts


def associated_data(account_id: UUID) -> bytes:
    return f"account:{account_id}:credentials".encode()


SEALED = SealedKind("credentials", associated_data, accounts.all_credentials,
                    accounts.set_credentials_many)


def seal(data_keys: DataKeys, account_id: UUID, credentials: dict[str, Any]) -> bytes:
    return SEALED.seal(data_keys, account_id, json.dumps(credentials, separators=(",", ":"))
                       .encode())


def open_sealed(data_keys: DataKeys, account_id: UUID, blob: bytes) -> dict[str, Any]:
    """Dangerous: the plaintext credentials. Only for the agent the account is assigned to.
    SecretUnavailable (503, logged for the operator) when they do not open."""
    credentials: dict[str, Any] = json.loads(SEALED.open(data_keys, account_id, blob))
    return credentials
