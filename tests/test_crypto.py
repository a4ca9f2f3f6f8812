"""AES-256-GCM secrets at rest, with key ids for rotation."""

from __future__ import annotations

import hashlib
import secrets

import pytest

from archomata.crypto import DataKeys, DecryptionError, key_id, key_id_of

OLD, NEW = secrets.token_bytes(32), secrets.token_bytes(32)
AAD = b"account:1:credentials"


class TestDataKeys:
    def test_round_trip_and_the_blob_names_its_key(self) -> None:
        keys = DataKeys(NEW)
        blob = keys.encrypt(b"hunter2-broker", AAD)
        assert b"hunter2" not in blob
        assert key_id_of(blob) == key_id(NEW) == hashlib.sha256(NEW).hexdigest()[:8]
        assert keys.decrypt(blob, AAD) == b"hunter2-broker"
        assert keys.encrypt(b"x", AAD) != keys.encrypt(b"x", AAD)  # fresh nonce each time

    def test_other_associated_data_or_a_flipped_bit_does_not_open(self) -> None:
        keys = DataKeys(NEW)
        blob = keys.encrypt(b"secret", AAD)
        with pytest.raises(DecryptionError):
            keys.decrypt(blob, b"account:2:credentials")
        tampered = blob[:-1] + bytes([blob[-1] ^ 1])
        with pytest.raises(DecryptionError):
            keys.decrypt(tampered, AAD)
        with pytest.raises(DecryptionError):
            keys.decrypt(b"\x02" + blob[1:], AAD)
        with pytest.raises(DecryptionError):
            keys.decrypt(b"short", AAD)

    def test_rotation_opens_old_blobs_and_reseals_under_the_new_key(self) -> None:
        old_blob = DataKeys(OLD).encrypt(b"secret", AAD)
        with pytest.raises(DecryptionError):
            DataKeys(NEW).decrypt(old_blob, AAD)
        rotating = DataKeys(NEW, [OLD])
        assert rotating.needs_rotation(old_blob)
        assert rotating.decrypt(old_blob, AAD) == b"secret"
        new_blob = rotating.reseal(old_blob, AAD)
        assert not rotating.needs_rotation(new_blob)
        assert DataKeys(NEW).decrypt(new_blob, AAD) == b"secret"
        assert rotating.encrypt(b"y", AAD)[1:5].hex() == key_id(NEW)
