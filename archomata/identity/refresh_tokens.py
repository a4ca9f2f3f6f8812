"""Refresh tokens: what Redis and PostgreSQL keep of one (its SHA-256, never the token),
and a rotation's successor sealed so that only whoever presents its parent opens it."""

from __future__ import annotations

import base64
import hashlib

from archomata.crypto import DataKeys, DecryptionError

TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# The successor's seal: AES-256-GCM under a key derived from the parent token alone. Not
# from the data key, which rotates (contract §5, rotate-data-key: the grace window
# survives it, and instances of a rolling deploy with different keys agree).
_SUCCESSOR_INFO = b"archomata.refresh.successor.v2\x00"
_SUCCESSOR_AAD = b"refresh-successor"


def _successor_keys(parent: str) -> DataKeys:
    # The parent has 256 random bits: one hash of it is a key no one without it can find.
    return DataKeys(hashlib.sha256(_SUCCESSOR_INFO + parent.encode()).digest())


def seal_successor(parent: str, successor: str) -> str:
    """`successor` sealed so that only whoever presents `parent` opens it."""
    blob = _successor_keys(parent).encrypt(successor.encode(), _SUCCESSOR_AAD)
    return base64.urlsafe_b64encode(blob).decode()


def open_successor(parent: str, sealed: str) -> str | None:
    """The successor `parent` was rotated to; None when `sealed` is not its (or empty)."""
    try:
        blob = base64.urlsafe_b64decode(sealed.encode())
        return _successor_keys(parent).decrypt(blob, _SUCCESSOR_AAD).decode()
    except (ValueError, DecryptionError):
        return None
