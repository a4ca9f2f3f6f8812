"""A user's TOTP secret at rest: sealed with the data key, the user id as associated data
(a row moved to another user does not open). `archomata rotate-data-key` re-seals it."""

from __future__ import annotations

from uuid import UUID

from archomata.identity.store import mfa
from archomata.sealed import SealedKind


def associated_data(user_id: UUID) -> bytes:
    return b"archomata.mfa.totp:" + user_id.bytes


TOTP = SealedKind("totp", associated_data, mfa.all_sealed, mfa.set_sealed_many)
