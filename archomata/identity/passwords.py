"""Password hashing with bcrypt, off the event loop, every character counting.

bcrypt reads at most 72 bytes, so the password is first condensed with HMAC-SHA-256 and
base64 (44 bytes): a 128-character password differs from its 72-byte prefix. Hashing
runs in a dedicated thread pool sized to the cores, so bcrypt neither blocks the event
loop nor queues behind unrelated work in the default executor.

The pool is shared by two lanes, people (logins, registration, password changes and
resets, invitations, hashing new agent keys) and agent API-key checks. Each lane may keep
at most `threads` jobs in the pool, so neither can fill it: a job of the other lane waits
for one bcrypt at most. Each lane also holds at most `queue` waiting jobs; past that, a
job is refused at once with 503 `busy` and Retry-After, rather than queueing without end
behind work nobody will wait for. A lane's slot is freed when the thread's bcrypt ends,
not when the request gives up, so a cancelled request cannot stack work in the pool.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from typing import TypeVar

import bcrypt

from archomata.errors import ServiceUnavailable

T = TypeVar("T")

MIN_LENGTH = 12
MAX_LENGTH = 128
# A fixed, public key: the HMAC only condenses length here, it is not a pepper.
_PREHASH_KEY = b"archomata.password.v1"
BUSY_RETRY_AFTER_SECONDS = 1
# Waiting jobs per lane when not configured: 16 logins is about one storm of 16 clients,
# a few seconds of bcrypt on one core at cost 12, well inside the request timeout.
DEFAULT_QUEUE = 16


class Lane(StrEnum):
    PEOPLE = "people"
    API_KEYS = "api_keys"


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


# bcrypt's lowest cost; a hash of a lower (or unreadable) one is judged as no hash at all.
MIN_ROUNDS = 4
# A well-formed hash of no password (fixed salt and digest, in bcrypt's alphabet): checking
# against it costs what checking a real hash of its cost does, and never matches.
_FILLER = "N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"


def _filler(rounds: int) -> str:
    return f"$2b${rounds:02d}${_FILLER}"


def judge_sync(password: str, password_hash: str | None, rounds: int) -> bool:
    """Whether `password` matches `password_hash`, at the cost of one bcrypt at `rounds`
    (the configured cost) at least, whatever the hash: none (an unknown account), or one
    of a lower cost (a dormant account, hashed before the cost was raised) costs as much
    as a current one, so the time of a wrong answer tells nothing. A cost-c hash costs
    2**c rounds: one of cost c < `rounds` is topped up by fillers of costs c..rounds-1,
    2**c + (2**c + ... + 2**(rounds-1)) = 2**rounds."""
    cost = rounds_of(password_hash) if password_hash else 0
    if password_hash is None or cost < MIN_ROUNDS:
        verify_sync(password, _filler(rounds))
        return False
    matches = verify_sync(password, password_hash)
    for top_up in range(cost, rounds):
        verify_sync(password, _filler(top_up))
    return matches


class _LaneGate:
    """How many jobs of one lane may run in the pool, and wait for it."""

    def __init__(self, running: int, waiting: int) -> None:
        self.running = running
        self.capacity = running + waiting
        self.held = 0        # running + waiting
        self.in_pool = 0     # submitted to the pool, not finished
        self._waiters: list[asyncio.Future[None]] = []

    def _busy(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "The service is busy; retry shortly.", code="busy",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)})

    async def run(self, executor: ThreadPoolExecutor, fn: Callable[..., T],
                  *args: object) -> T:
        if self.held >= self.capacity:
            raise self._busy()
        self.held += 1
        loop = asyncio.get_running_loop()
        try:
            while self.in_pool >= self.running:
                waiter = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
            job: Future[T] = executor.submit(fn, *args)
        except BaseException:
            self.held -= 1
            self._wake()
            raise
        self.in_pool += 1
        job.add_done_callback(lambda _: _call_soon(loop, self._finished))
        return await asyncio.wrap_future(job, loop=loop)

    def _finished(self) -> None:
        self.in_pool -= 1
        self.held -= 1
        self._wake()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                return


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nothing waits for the slot
        loop.call_soon_threadsafe(callback)


class PasswordHasher:
    """bcrypt at the configured cost, in its own thread pool, in two bounded lanes."""

    def __init__(self, rounds: int, threads: int, queue: int = DEFAULT_QUEUE) -> None:
        self.rounds = rounds
        self.threads = threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bcrypt")
        self._lanes = {lane: _LaneGate(threads, queue) for lane in Lane}
        self._calls = 0
        self._calls_lock = threading.Lock()

    async def hash(self, password: str, lane: Lane = Lane.PEOPLE) -> str:
        return await self._run(lane, hash_sync, password, self.rounds)

    async def verify(self, password: str, password_hash: str | None,
                     lane: Lane = Lane.PEOPLE) -> bool:
        """Checks a password, at the configured cost at least (judge_sync): with no hash
        (unknown user) or a weaker one (a dormant account), the same bcrypt work as
        with a current hash, so timing does not tell which emails exist."""
        return await self._run(lane, judge_sync, password, password_hash, self.rounds)

    def needs_rehash(self, password_hash: str) -> bool:
        return rounds_of(password_hash) < self.rounds

    def load(self, lane: Lane) -> int:
        """Jobs of `lane` running or waiting now."""
        return self._lanes[lane].held

    @property
    def calls(self) -> int:
        """bcrypt computations started so far (hash and verify), whatever their lane."""
        return self._calls

    async def _run(self, lane: Lane, fn: Callable[..., T], *args: object) -> T:
        return await self._lanes[lane].run(self._executor, self._counted, fn, *args)

    def _counted(self, fn: Callable[..., T], *args: object) -> T:
        with self._calls_lock:
            self._calls += 1
        return fn(*args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
