"""The sealed backup stream, as pure functions: every way a file can be wrong is refused
with a message saying which, and every size round-trips."""

from __future__ import annotations

import io
import secrets
import struct

import pytest

from archomata.ops import backup_stream
from archomata.ops.backup_stream import HEADER_BYTES, BackupError, open_stream, seal, verify

KEY = secrets.token_bytes(32)
CHUNK = 64  # small chunks: many of them in a few bytes


def sealed(data: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    seal(key, io.BytesIO(data).read, out.write, chunk_bytes=CHUNK)
    return out.getvalue()


def opened(blob: bytes, key: bytes = KEY) -> bytes:
    return b"".join(open_stream(key, io.BytesIO(blob)))


def chunks(blob: bytes) -> list[bytes]:
    """The file's chunks, each with its length field."""
    found, at = [], HEADER_BYTES
    while at < len(blob):
        (length,) = struct.unpack(">I", blob[at:at + 4])
        end = at + 4 + (length & ~(1 << 31))
        found.append(blob[at:end])
        at = end
    return found


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3])
def test_every_size_round_trips(size: int) -> None:
    data = secrets.token_bytes(size)
    blob = sealed(data)
    assert opened(blob) == data
    assert verify(KEY, io.BytesIO(blob)) == size
    assert len(chunks(blob)) == -(-size // CHUNK) + 1  # the data's chunks and the final one


def test_two_backups_of_the_same_data_differ() -> None:
    data = b"same" * 40
    assert sealed(data) != sealed(data)  # a salt of their own: no nonce ever repeats


def test_a_flipped_byte_anywhere_is_refused() -> None:
    blob = sealed(secrets.token_bytes(3 * CHUNK))
    for at in range(len(blob)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x01
        with pytest.raises(BackupError):
            opened(bytes(damaged))


def test_truncation_at_any_point_is_refused() -> None:
    blob = sealed(secrets.token_bytes(3 * CHUNK))
    for end in range(len(blob)):
        with pytest.raises(BackupError):
            opened(blob[:end])


def test_a_file_cut_at_a_chunk_boundary_says_it_is_truncated() -> None:
    blob = sealed(secrets.token_bytes(3 * CHUNK))
    without_final = blob[:len(blob) - len(chunks(blob)[-1])]
    with pytest.raises(BackupError, match="truncated"):
        opened(without_final)


def test_reordered_chunks_are_refused() -> None:
    blob = sealed(secrets.token_bytes(3 * CHUNK))
    parts = chunks(blob)
    swapped = blob[:HEADER_BYTES] + parts[1] + parts[0] + b"".join(parts[2:])
    with pytest.raises(BackupError, match="chunk 0 does not authenticate"):
        opened(swapped)


def test_a_chunk_marked_final_early_is_refused() -> None:
    blob = sealed(secrets.token_bytes(3 * CHUNK))
    first = bytearray(chunks(blob)[0])
    first[0] |= 0x80  # the final flag, set on the first chunk
    with pytest.raises(BackupError, match="chunk 0 does not authenticate"):
        opened(blob[:HEADER_BYTES] + bytes(first))


def test_data_after_the_final_chunk_is_refused() -> None:
    with pytest.raises(BackupError, match="after its final chunk"):
        opened(sealed(b"data") + b"x")


def test_the_wrong_key_is_named_before_anything_is_decrypted() -> None:
    other = secrets.token_bytes(32)
    with pytest.raises(BackupError, match="made with another key") as refused:
        opened(sealed(b"data"), key=other)
    assert backup_stream.key_id(KEY).hex() in str(refused.value)
    assert KEY.hex() not in str(refused.value) and other.hex() not in str(refused.value)


def test_something_else_is_not_a_backup() -> None:
    with pytest.raises(BackupError, match="not an Archomata backup"):
        opened(b"PGDMP" + b"\0" * 100)
    with pytest.raises(BackupError, match="not an Archomata backup"):
        opened(b"")


def test_a_hostile_chunk_size_is_refused_before_any_allocation() -> None:
    blob = bytearray(sealed(b"data"))
    blob[HEADER_BYTES - 4:HEADER_BYTES] = struct.pack(">I", 1 << 30)
    with pytest.raises(BackupError, match="chunk size"):
        opened(bytes(blob))


def test_a_failing_source_leaves_no_final_chunk() -> None:
    out = io.BytesIO()

    def failed() -> None:
        raise BackupError("pg_dump failed")

    with pytest.raises(BackupError):
        seal(KEY, io.BytesIO(b"partial dump").read, out.write, chunk_bytes=CHUNK,
             finish=failed)
    with pytest.raises(BackupError, match="truncated"):
        opened(out.getvalue())
