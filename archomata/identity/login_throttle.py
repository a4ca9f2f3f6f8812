"""A backoff on failed sign-ins per account, in Redis, so that many IPs together cannot
brute-force one account.

    throttle = request.app[keys.LOGIN_THROTTLE]
    await throttle.check(subject)           # RateLimited while the account is backing off
    ...verify the password...
    await throttle.record_failure(subject)  # on every failed attempt, unknown email included
    await throttle.reset(subject)           # on success

`subject` names the account, and must name it the same way whatever spelling of its email
was typed: archomata.identity.signin.throttle_subject gives it (the resolved user, else the email
as the user lookup itself normalises it); archomata.identity.signin.password_proves does the
whole dance around bcrypt for every handler that checks a password.

The first `free_failures` failures cost nothing; each further one makes the account wait
`base * 2 ** n` seconds, capped at `max_seconds` (five minutes by default), before the next
attempt is even checked. An attacker can therefore slow the owner down by the cap at
most, never lock them out for long; the per-IP login limit bounds each attacker anyway.
Failures are forgotten `memory_seconds` after the last one. The Redis key is a SHA-256 of
the subject, never an email; nothing here logs either. While Redis is unreachable the
same backoff is kept in this process's memory (bounded), never lifted.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from archomata.errors import RateLimited
from archomata.gate import ratelimit
from archomata.gate.ratelimit import FallbackReporter
from archomata.redis_boundary import REDIS_FAILURES

# KEYS: failure counter, lock. ARGV: free failures, base ms, max ms, memory ms.
# Returns the lock now imposed, in ms (0: none).
LOGIN_FAILURE = """
local failures = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local over = failures - tonumber(ARGV[1])
if over <= 0 then
  return 0
end
local wait = math.floor(math.min(tonumber(ARGV[2]) * 2 ^ math.min(over - 1, 30),
                                 tonumber(ARGV[3])))
redis.call('SET', KEYS[2], 1, 'PX', wait)
return wait
"""


def account_key(subject: str) -> str:
    """The throttle's name for an account: no email in Redis, logs or memory dumps."""
    digest = hashlib.sha256(subject.encode()).hexdigest()
    return f"login:{{{digest}}}"


@dataclass
class _LocalAccount:
    failures: int = 0
    forget_at: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Per-account backoff on failed logins (see the module doc for how to call it)."""

    def __init__(self, redis: Redis, *, free_failures: int, max_seconds: float,
                 base_seconds: float = 1.0, memory_seconds: float | None = None,
                 on_fallback: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 local_free_failures: int | None = None) -> None:
        self._redis = redis
        self._free = free_failures
        # While Redis fails, in memory: this process's share (a `serve --workers` worker's).
        self._local_free = free_failures if local_free_failures is None else local_free_failures
        self._base_ms = int(base_seconds * 1000)
        self._max_ms = int(max_seconds * 1000)
        self._memory_ms = int((memory_seconds or max(900.0, 2 * max_seconds)) * 1000)
        self._script = redis.register_script(LOGIN_FAILURE)
        self._reporter = FallbackReporter(on_fallback)
        self._clock = clock
        self._local: dict[str, _LocalAccount] = {}

    async def check(self, subject: str) -> None:
        """Raises RateLimited (with Retry-After) while the account is backing off."""
        key = account_key(subject)
        try:
            wait_ms = int(await self._redis.pttl(f"{key}:lock"))
        except REDIS_FAILURES as exc:
            # To memory, not open: an outage must not reopen brute force on one account.
            self._reporter.report("login throttle", exc)
            wait_ms = self._local_wait_ms(key)
        if wait_ms > 0:
            raise RateLimited(math.ceil(wait_ms / 1000),
                              "Too many failed sign-ins for this account; retry later.",
                              bucket="login_backoff")

    async def record_failure(self, subject: str) -> float:
        """Counts a failed attempt; returns the seconds the account must now wait (0: none)."""
        key = account_key(subject)
        try:
            wait_ms = int(await self._script(
                keys=[f"{key}:failures", f"{key}:lock"],
                args=[self._free, self._base_ms, self._max_ms, self._memory_ms]))
        except REDIS_FAILURES as exc:  # counted in memory, as `check` reads it
            self._reporter.report("login throttle", exc)
            wait_ms = self._local_failure(key)
        return wait_ms / 1000

    async def reset(self, subject: str) -> None:
        """Forgets the failures: call it after a successful login."""
        key = account_key(subject)
        self._local.pop(key, None)
        try:
            await self._redis.delete(f"{key}:failures", f"{key}:lock")
        except REDIS_FAILURES as exc:
            # The login itself succeeded; what Redis keeps only slows later failures down.
            self._reporter.report("login throttle", exc)

    def _local_wait_ms(self, key: str) -> int:
        account = self._local.get(key)
        if account is None:
            return 0
        return max(0, math.ceil((account.locked_until - self._clock()) * 1000))

    def _local_failure(self, key: str) -> int:
        now = self._clock()
        account = self._local.get(key)
        if account is None or account.forget_at <= now:
            if len(self._local) >= ratelimit.MAX_LOCAL_KEYS:
                self._local = {k: v for k, v in self._local.items() if v.forget_at > now}
            account = self._local[key] = _LocalAccount()
        account.failures += 1
        account.forget_at = now + self._memory_ms / 1000
        over = account.failures - self._local_free
        if over <= 0:
            return 0
        wait_ms: int = min(self._base_ms * 2 ** min(over - 1, 30), self._max_ms)
        account.locked_until = now + wait_ms / 1000
        return wait_ms
