"""Who may run an audit search (`q`) now: a tenant's searches must not slow the others.

Two gates before a search touches the database, beside the bounds of the search itself
(a statement timeout, a candidate cap, a window for several words: service.py, store.py):

- per person, SEARCHES_PER_USER in a sliding window, counted in Redis with the rate
  limiter every instance shares (from memory while Redis is down, never unlimited):
  429 `too_many_searches` with Retry-After beyond;
- per instance, at most SEARCHES_AT_ONCE running: half the cores (at least one), so that
  searches, whoever sends them, always leave cores to every other request; and a slot
  rests as long as its search ran before the next search takes it (REST_RATIO), so that
  searches back to back keep a slot's core busy half the time at most (measured: 2.7x
  another org's latency without the rest, bench/audit_search.py). A search waits up to
  SLOT_WAIT_SECONDS for its turn (holding no connection), then answers 503
  `searches_busy` with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

from archomata.config import RateLimit
from archomata.errors import RateLimited, ServiceUnavailable
from archomata.gate.ratelimit import RateLimiter

SEARCHES_PER_USER = RateLimit(20, 60)
SEARCHES_AT_ONCE = max(1, (os.cpu_count() or 2) // 2)
SLOT_WAIT_SECONDS = 5.0
REST_RATIO = 1.0


class SearchGate:
    def __init__(self, limiter: RateLimiter, at_once: int = SEARCHES_AT_ONCE) -> None:
        self._limiter = limiter
        self._slots = asyncio.Semaphore(at_once)

    @contextlib.asynccontextmanager
    async def hold(self, actor: object) -> AsyncIterator[None]:
        """A turn for one search by `actor` (the person's id) while the block runs."""
        decision = await self._limiter.hit(f"rl:audit-search:{actor}", SEARCHES_PER_USER)
        if not decision.allowed:
            error = RateLimited(decision.retry_after_seconds,
                                f"At most {SEARCHES_PER_USER.limit} searches of the audit log "
                                f"a person in {SEARCHES_PER_USER.window_seconds} s.",
                                code="too_many_searches", bucket="audit_search")
            error.headers.update(decision.headers())
            raise error
        try:
            await asyncio.wait_for(self._slots.acquire(), SLOT_WAIT_SECONDS)
        except TimeoutError:
            raise ServiceUnavailable("This server runs as many audit searches as it may; "
                                     "retry shortly.", code="searches_busy",
                                     headers={"Retry-After": "1"}) from None
        started = time.monotonic()
        try:
            yield
        finally:
            # The answer leaves now; the slot frees once it has rested.
            rest = (time.monotonic() - started) * REST_RATIO
            asyncio.get_running_loop().call_later(rest, self._slots.release)
