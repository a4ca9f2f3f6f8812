"""Secrets at rest: AES-256-GCM (the `cryptography` package's AESGCM) under the data key.

A sealed blob names the key that sealed it, so the data key can be rotated: set the new
key as ARCHOMATA_DATA_KEY, the old one as ARCHOMATA_DATA_KEY_PREVIOUS, run
`archomata rotate-data-key`, then drop the old key. Layout:

    version (1 byte, 0x01) | key id (4 bytes) | nonce (12 bytes) | ciphertext + GCM tag

The key id is the first 8 hex digits (4 bytes) of the key's SHA-256: it picks the key,
it is no secret. The caller's associated data (e.g. `account:<id>:credentials`) binds a
blob to its row, so a blob copied onto another row does not open.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = b"\x01"
KEY_ID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES


class DecryptionError(Exception):
    """A blob cannot be opened: unknown key, wrong associated data, or tampered with."""


class UnknownKeyError(DecryptionError):
    """A blob sealed under a key that is not configured."""


def key_id(key: bytes) -> str:
    """The first 8 hex digits of the key's SHA-256."""
    return hashlib.sha256(key).hexdigest()[:KEY_ID_BYTES * 2]


def key_id_of(blob: bytes) -> str:
    """The id of the key that sealed `blob`."""
    if len(blob) < HEADER_BYTES or blob[:1] != VERSION:
        raise DecryptionError("not a sealed blob")
    return blob[1:1 + KEY_ID_BYTES].hex()


class DataKeys:
    """The current data key, which seals, and older ones, which only open."""

    def __init__(self, current: bytes, previous: Iterable[bytes] = ()) -> None:
        self.current_id = key_id(current)
        self._ciphers = {key_id(k): AESGCM(k) for k in previous}
        self._ciphers[self.current_id] = AESGCM(current)
        self._current = self._ciphers[self.current_id]

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext, associated_data)
        return VERSION + bytes.fromhex(self.current_id) + nonce + sealed

    def decrypt(self, blob: bytes, associated_data: bytes) -> bytes:
        cipher = self._ciphers.get(key_id_of(blob))
        if cipher is None:
            raise UnknownKeyError(f"sealed under key {key_id_of(blob)}, which is not configured")
        nonce = blob[1 + KEY_ID_BYTES:HEADER_BYTES]
        try:
            return cipher.decrypt(nonce, blob[HEADER_BYTES:], associated_data)
        except InvalidTag:
            raise DecryptionError("the blob does not open with its key") from None

    def needs_rotation(self, blob: bytes) -> bool:
        return key_id_of(blob) != self.current_id

    def reseal(self, blob: bytes, associated_data: bytes) -> bytes:
        """The same plaintext sealed under the current key."""
        return self.encrypt(self.decrypt(blob, associated_data), associated_data)
