"""Password hashing with bcrypt, off the event loop, every character counting.

bcrypt reads at most 72 bytes, so the password is first condensed with HMAC-SHA-256 and
base64 (44 bytes): a 128-character password differs from its 72-byte prefix. Hashing
runs in a dedicated thread pool sized to the cores, so bcrypt neither blocks the event
loop nor queues behind unrelated work in the default executor.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from concurrent.futures import ThreadPoolExecutor

import bcrypt

MIN_LENGTH = 12
MAX_LENGTH = 128
# A fixed, public key: the HMAC only condenses length here, it is not a pepper.
_PREHASH_KEY = b"archomata.password.v1"


def _prehash(password: str) -> bytes:
    digest = hmac.new(_PREHASH_KEY, password.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest)


def rounds_of(password_hash: str) -> int:
    """The cost factor of a `$2b$12$...` hash (0 when it cannot be read)."""
    parts = password_hash.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0


def hash_sync(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def verify_sync(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
    except ValueError:
        return False


class PasswordHasher:
    """bcrypt at the configured cost, in its own thread pool."""

    def __init__(self, rounds: int, threads: int) -> None:
        self.rounds = rounds
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, hash_sync, password, self.rounds)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Checks a password; with no hash (unknown user) spends the same bcrypt work and
        answers False, so timing does not tell which emails exist."""
        if password_hash is None:
            password_hash = await self._dummy()
            await self._run(verify_sync, password, password_hash)
            return False
        return await self._run(verify_sync, password, password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        return rounds_of(password_hash) < self.rounds

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("archomata-dummy-password")
        return self._dummy_hash

    async def _run(self, fn: object, *args: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
