"""The encrypted backup file: a byte stream sealed with AES-256-GCM in authenticated
chunks (the `cryptography` package's AESGCM and HKDF; nothing hand-made below them).

    header  magic "ARCHBKP\\0" (8) | format version (1) | key id (4) | salt (16) | chunk size (4)
    chunk   length (4, big-endian; its top bit marks the final chunk) | ciphertext + tag

Each file is sealed under its own key, HKDF-SHA256 of ARCHOMATA_BACKUP_KEY with the
file's random salt, so a nonce never repeats under one key however many backups the
backup key makes. Chunk `i`'s nonce is `i` (8 bytes) and the final flag (4 bytes), and
every chunk authenticates the header as associated data, so:

    a flipped byte          the chunk's tag fails
    chunks reordered        a chunk's tag fails (its index is in the nonce)
    truncated               the stream ends before a chunk marked final
    data after the end      refused: nothing follows the final chunk
    the wrong key           the key id says so, before any decryption
    a header edited         every tag fails (it is the associated data)

The final chunk may be empty: a stream's end is sealed only once the producer finished
(pg_dump exited 0). Memory stays at about two chunks whatever the size.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"ARCHBKP\x00"
VERSION = 1
KEY_BYTES = 32
SALT_BYTES = 16
TAG_BYTES = 16
CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 1 << 24  # what a reader accepts: a hostile header cannot make it allocate more
_HEADER = struct.Struct(">8sB4s16sI")
_LENGTH = struct.Struct(">I")
_FINAL = 1 << 31
HEADER_BYTES = _HEADER.size


class BackupError(Exception):
    """A backup file that must not be trusted; the message says what is wrong with it."""


def key_id(key: bytes) -> bytes:
    """Names the backup key without revealing it: the first 4 bytes of a SHA-256 of it."""
    return hashlib.sha256(b"archomata backup key id\x00" + key).digest()[:4]


def _file_key(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                   info=b"archomata backup v1 file key").derive(key)
    return AESGCM(derived)


def _nonce(index: int, final: bool) -> bytes:
    return struct.pack(">QI", index, 1 if final else 0)


def seal(key: bytes, read: Callable[[int], bytes], write: Callable[[bytes], object], *,
         chunk_bytes: int = CHUNK_BYTES, finish: Callable[[], None] = lambda: None) -> int:
    """Writes the sealed form of everything `read` returns until it returns b"", then
    calls `finish` (which raises if the source failed: then no final chunk is written,
    and the file reads as truncated) and seals the end. Returns the plaintext size."""
    if len(key) != KEY_BYTES:
        raise ValueError("the backup key must be 32 bytes")
    salt = secrets.token_bytes(SALT_BYTES)
    header = _HEADER.pack(MAGIC, VERSION, key_id(key), salt, chunk_bytes)
    aead = _file_key(key, salt)
    write(header)
    index = total = 0
    while block := read(chunk_bytes):
        total += len(block)
        _write_chunk(write, aead.encrypt(_nonce(index, False), block, header), final=False)
        index += 1
    finish()
    _write_chunk(write, aead.encrypt(_nonce(index, True), b"", header), final=True)
    return total


def _write_chunk(write: Callable[[bytes], object], sealed: bytes, *, final: bool) -> None:
    write(_LENGTH.pack(len(sealed) | (_FINAL if final else 0)))
    write(sealed)


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    return data if data is not None else b""


def open_stream(key: bytes, source: BinaryIO) -> Iterator[bytes]:
    """The plaintext of a sealed stream, chunk by chunk, each authenticated before it is
    yielded. BackupError as soon as something is wrong: a consumer that stops at the
    first error has used only authenticated bytes, but not yet all of them (authenticate
    the whole file first where that matters: `verify`)."""
    header = _read_exactly(source, HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        raise BackupError("not an Archomata backup (too short for its header)")
    magic, version, kid, salt, chunk_bytes = _HEADER.unpack(header)
    if magic != MAGIC:
        raise BackupError("not an Archomata backup (no ARCHBKP header)")
    if version != VERSION:
        raise BackupError(f"backup format version {version} is not supported "
                          f"(this version reads {VERSION})")
    if kid != key_id(key):
        raise BackupError(f"the backup was made with another key (key id {kid.hex()}; "
                          f"ARCHOMATA_BACKUP_KEY is {key_id(key).hex()})")
    if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
        raise BackupError("the backup's header is damaged (chunk size out of range)")
    aead = _file_key(key, salt)
    index = 0
    while True:
        length_field = _read_exactly(source, _LENGTH.size)
        if len(length_field) < _LENGTH.size:
            raise BackupError(f"the backup is truncated: it ends after {index} chunks, "
                              "before its final chunk")
        (length,) = _LENGTH.unpack(length_field)
        final, length = bool(length & _FINAL), length & ~_FINAL
        if not TAG_BYTES <= length <= chunk_bytes + TAG_BYTES:
            raise BackupError(f"chunk {index} is damaged (impossible length)")
        sealed = _read_exactly(source, length)
        if len(sealed) < length:
            raise BackupError(f"the backup is truncated inside chunk {index}")
        try:
            plain = aead.decrypt(_nonce(index, final), sealed, header)
        except InvalidTag:
            raise BackupError(f"chunk {index} does not authenticate: the file is damaged, "
                              "tampered with, or its chunks reordered") from None
        if final:
            if _read_exactly(source, 1):
                raise BackupError("the backup has data after its final chunk")
            if plain:
                yield plain
            return
        yield plain
        index += 1


def verify(key: bytes, source: BinaryIO) -> int:
    """Authenticates the whole stream; its plaintext size. BackupError otherwise."""
    return sum(len(block) for block in open_stream(key, source))
