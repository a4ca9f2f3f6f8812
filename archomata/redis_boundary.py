"""The one place a Redis failure becomes an answer.

Every call to Redis runs inside `redis_call()`: a failure there (Redis down, a timeout,
a command refused) is raised as ServiceUnavailable (503 `service_unavailable`), from the
Redis error so the log keeps its cause, and never reaches a client as a 500.

Where a component deliberately goes on without Redis (the rate limits and the login
backoff count in memory, export slots per instance, caches and wake-ups are best effort)
it catches REDIS_FAILURES itself, and says why in one line beside the catch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from archomata.errors import ServiceUnavailable

# redis-py raises its own errors, but a socket can also fail below it (OSError) and an
# asyncio timeout can cut a call short (TimeoutError, an OSError too: named for clarity).
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)
UNAVAILABLE = "The session store is unavailable."


def unavailable() -> ServiceUnavailable:
    """The answer to a Redis failure, for a caller that must finish something first:
    raise it `from` the failure."""
    return ServiceUnavailable(UNAVAILABLE, code="service_unavailable")


@contextmanager
def redis_call() -> Iterator[None]:
    """Runs the block's Redis calls; a Redis failure leaves it as ServiceUnavailable."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise unavailable() from exc
