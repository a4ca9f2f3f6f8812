"""Rate limits kept in Redis: a sliding window per client IP and route class.

Sliding window (`RateLimiter`)
------------------------------
Two fixed windows weighted by their overlap with the last `window` seconds (the "sliding
window counter"): at `elapsed` into the current window a client has used
`previous * (window - elapsed) / window + current`. One small hash per key, checked and
counted by one Lua script in one round trip, on Redis's clock so every instance agrees.
A refused request is not counted: a client that keeps knocking gets in again as soon as
its window has slid far enough, no later.

Standalone, as the rate-limit middleware does it::

    decision = await limiter.hit(key, limit)
    decision.raise_if_refused()          # RateLimited: 429 + Retry-After + RateLimit-*

Inside a pipeline another middleware is sending anyway (one round trip for the rate
limit and, say, the revocation check)::

    target = request[keys.RATE_TARGET]   # set by the authn middleware; None: not limited
    async with redis.pipeline(transaction=False) as pipe:
        pending = limiter.queue(pipe, *target)       # queues exactly one command, first
        ...queue your own commands...
        try:
            replies = await pipe.execute(raise_on_error=False)
            decision = limiter.result_from(pending, replies[0])
        except REDIS_FAILURES as exc:
            decision = limiter.result_from(pending, exc)
    request[keys.RATE_DECISION] = decision           # the middleware then asks no one
    decision.raise_if_refused()                      # or leave that to the middleware

`result_from` takes the reply, or an exception in its place (Redis unreachable, script
cache flushed): it then answers from memory, exactly as `hit` does.

When Redis is unreachable each process keeps the same windows in memory (never
unlimited; with N instances a client may get up to N times the limit meanwhile). A
`serve --workers` worker allows its `share` of each limit there, so that the workers of
one instance together allow the limit, as one process would. Every
such decision counts in `archomata_ratelimit_fallback_total`; a warning is logged at most
once a minute.

The per-account backoff on failed logins is archomata.identity.login_throttle.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, RedisError

from archomata.config import RateLimit
from archomata.errors import RateLimited
from archomata.redis_boundary import REDIS_FAILURES

log = logging.getLogger(__name__)

FALLBACK_LOG_INTERVAL_SECONDS = 60.0
REDIS_RETRY_SECONDS = 1.0
MAX_LOCAL_KEYS = 100_000

# A Lua function, so that other scripts can count a hit in the same call (the
# authenticator's gate, see archomata.gate.check). `key`: the bucket, a hash
# {window index: count}; `limit`; `window` in ms. Returns {allowed 0|1, previous count,
# current count (this hit included), ms into window}.
SLIDING_WINDOW_FUNCTION = """
local function sliding_window(key, limit, window)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  local index = math.floor(now / window)
  local elapsed = now - index * window
  local current_field = string.format('%d', index)
  local previous_field = string.format('%d', index - 1)
  local counts = redis.call('HMGET', key, previous_field, current_field)
  local previous = tonumber(counts[1]) or 0
  local current = tonumber(counts[2]) or 0
  local allowed = 0
  if previous * (window - elapsed) / window + current + 1 <= limit then
    allowed = 1
    current = redis.call('HINCRBY', key, current_field, 1)
    if redis.call('HLEN', key) > 2 then
      for _, field in ipairs(redis.call('HKEYS', key)) do
        if field ~= current_field and field ~= previous_field then
          redis.call('HDEL', key, field)
        end
      end
    end
    redis.call('PEXPIRE', key, window * 2)
  end
  return {allowed, previous, current, elapsed}
end
"""
# KEYS[1]: the bucket. ARGV: limit, window in ms.
SLIDING_WINDOW = SLIDING_WINDOW_FUNCTION + \
    "return sliding_window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"
# The start of a script that counts a request's hit, if it is limited, before its own
# reads (so that one call does both): with a limit in ARGV[1] (its window in ms in
# ARGV[2]) KEYS[1] is the bucket; `first` is the index of the script's own first key and
# `rate` the hit's reply, or false. Run such a script with
# archomata.gate.check.call_gate.
OPTIONAL_HIT = SLIDING_WINDOW_FUNCTION + """
local first = 1
local rate = false
if ARGV[1] ~= '' then
  rate = sliding_window(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
  first = 2
end
"""


def optional_hit_call(target: tuple[str, RateLimit] | None,
                      own_keys: list[str]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV for a script starting with OPTIONAL_HIT, given its own KEYS."""
    if target is None:
        return own_keys, ["", ""]
    bucket, limit = target
    return [bucket, *own_keys], [limit.limit, limit.window_seconds * 1000]

@dataclass(frozen=True, slots=True)
class RateDecision:
    """One request's verdict, with what the RateLimit-* headers tell the client."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit),
                "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset_seconds)}

    def raise_if_refused(self, bucket: str | None = None) -> None:
        if not self.allowed:
            error = RateLimited(self.retry_after_seconds, bucket=bucket)
            error.headers.update(self.headers())
            raise error


@dataclass(frozen=True, slots=True)
class PendingHit:
    """A check queued on a pipeline by `RateLimiter.queue`, waiting for its reply."""

    key: str
    limit: RateLimit


class RedisSkipped(RedisError):
    """Redis failed a moment ago; this check did not try it again."""


def _wait_ms(previous: int, current: int, elapsed: int, window: int, limit: int) -> float:
    """How long until one more request fits, given a refusal now."""
    left = window - elapsed
    room = limit - 1 - current
    if room >= 0:
        # Fits within this window once the previous window's weight has shrunk enough
        # (previous > 0 here, or the request would have fitted already).
        return max(0.0, left - room * window / max(previous, 1))
    # Only in the next window, once this window's count (then "previous") weighs less.
    return left + window - (limit - 1) * window / current


def decide(allowed: bool, previous: int, current: int, elapsed: int,
           limit: RateLimit) -> RateDecision:
    """The decision for a window state, as the script (or the local window) left it."""
    window = limit.window_seconds * 1000
    left = window - elapsed
    if allowed:
        used = previous * left / window + current
        return RateDecision(True, limit.limit, max(0, math.floor(limit.limit - used)),
                            max(1, math.ceil(left / 1000)), 0)
    wait = max(1, math.ceil(_wait_ms(previous, current, elapsed, window, limit.limit) / 1000))
    return RateDecision(False, limit.limit, 0, wait, wait)


class _LocalWindows:
    """The sliding windows in this process's memory, used while Redis is unreachable.

    Bounded: past MAX_LOCAL_KEYS entries the stale ones go, then the least recently hit,
    which then start afresh (bounded memory beats exactness during an outage).
    """

    def __init__(self, clock: Callable[[], float], max_keys: int = MAX_LOCAL_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._entries: dict[str, tuple[int, int, int, int]] = {}  # index, prev, cur, window

    def hit(self, key: str, limit: RateLimit) -> RateDecision:
        window = limit.window_seconds * 1000
        index, elapsed = divmod(int(self._clock() * 1000), window)
        previous, current = 0, 0
        entry = self._entries.pop(key, None)
        if entry is not None and entry[0] == index:
            previous, current = entry[1], entry[2]
        elif entry is not None and entry[0] == index - 1:
            previous = entry[2]
        allowed = previous * (window - elapsed) / window + current + 1 <= limit.limit
        current += int(allowed)
        self._entries[key] = (index, previous, current, window)
        if len(self._entries) > self._max_keys:
            self._prune()
        return decide(allowed, previous, current, elapsed, limit)

    def _prune(self) -> None:
        now = int(self._clock() * 1000)
        live = [(k, v) for k, v in self._entries.items() if v[0] >= now // v[3] - 1]
        self._entries = dict(live[-(self._max_keys * 3 // 4):])  # most recently hit last


class FallbackReporter:
    """Counts every decision served from memory and logs the outage at most once a minute."""

    def __init__(self, on_fallback: Callable[[], None]) -> None:
        self._on_fallback = on_fallback
        self._logged_at = -math.inf

    def report(self, what: str, exc: BaseException) -> None:
        self._on_fallback()
        now = time.monotonic()
        if now - self._logged_at >= FALLBACK_LOG_INTERVAL_SECONDS:
            self._logged_at = now
            log.warning("Redis failed: %s served from memory", what,
                        extra={"error": type(exc).__name__})


def _window_state(raw: object) -> tuple[int, int, int, int]:
    if not isinstance(raw, list | tuple) or len(raw) != 4:
        raise TypeError("unexpected reply from the rate-limit script")
    allowed, previous, current, elapsed = (int(value) for value in raw)
    return allowed, previous, current, elapsed


class RateLimiter:
    """Sliding-window limits in Redis, with an in-memory stand-in (see the module doc)."""

    def __init__(self, redis: Redis, *, on_fallback: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time,
                 share: Callable[[int], int] = lambda limit: limit) -> None:
        self._redis = redis
        self._share = share  # of a limit, in memory (see the module doc)
        self._sha = hashlib.sha1(SLIDING_WINDOW.encode(), usedforsecurity=False).hexdigest()
        self._script_loaded = False
        self._local = _LocalWindows(clock)
        self._reporter = FallbackReporter(on_fallback)
        self._skip_redis_until = -math.inf

    def queue(self, pipe: Pipeline, key: str, limit: RateLimit) -> PendingHit:
        """Queues the check of `key` on `pipe` (one command); see `result_from`."""
        args = (limit.limit, limit.window_seconds * 1000)
        if self._script_loaded:
            pipe.evalsha(self._sha, 1, key, *args)
        else:
            pipe.eval(SLIDING_WINDOW, 1, key, *args)  # loads the script for the EVALSHAs
        return PendingHit(key, limit)

    def result_from(self, pending: PendingHit, raw: object) -> RateDecision:
        """The decision from the queued command's reply, or from memory when `raw` is an
        exception (Redis unreachable, or its script cache flushed since)."""
        if isinstance(raw, BaseException):
            if isinstance(raw, NoScriptError):
                self._script_loaded = False  # the next queue() sends the script itself
            return self._fallback(pending, raw)
        try:
            allowed, previous, current, elapsed = _window_state(raw)
        except (TypeError, ValueError) as exc:
            return self._fallback(pending, exc)
        self._script_loaded = True
        return decide(bool(allowed), previous, current, elapsed, pending.limit)

    async def hit(self, key: str, limit: RateLimit) -> RateDecision:
        """Counts one request against `key` and says whether it may pass."""
        pending = PendingHit(key, limit)
        if time.monotonic() < self._skip_redis_until:
            return self._fallback(pending, RedisSkipped())
        args = (limit.limit, limit.window_seconds * 1000)
        raw: Any
        try:
            if self._script_loaded:
                try:
                    raw = await self._redis.evalsha(self._sha, 1, key, *args)
                except NoScriptError:
                    raw = await self._redis.eval(SLIDING_WINDOW, 1, key, *args)
            else:
                raw = await self._redis.eval(SLIDING_WINDOW, 1, key, *args)
        except REDIS_FAILURES as exc:  # to memory (see _fallback), never open
            # Skip Redis for a moment: an unreachable one would add its timeout to each call.
            self._skip_redis_until = time.monotonic() + REDIS_RETRY_SECONDS
            raw = exc
        return self.result_from(pending, raw)

    def _fallback(self, pending: PendingHit, exc: BaseException) -> RateDecision:
        # Fail to memory, never open: a Redis outage must not lift the limits.
        self._reporter.report("rate limits", exc)
        limit = pending.limit
        return self._local.hit(pending.key,
                               RateLimit(self._share(limit.limit), limit.window_seconds))
