"""How many audit exports run at once: EXPORTS_PER_ORG per org across every instance, and
ARCHOMATA_EXPORTS_PER_INSTANCE on each instance.

    async with request.app[keys.EXPORTS].hold(org_id) as lease:
        ...stream, and stop once `lease.lost`...

An export holds no database connection while it writes (see audit/service.py), so
these caps bound what a tenant's exports cost an instance (a page of entries in memory,
a turn at the pool per page), not the pool itself.

Per org, Redis keeps a sorted set `exports:{org_id}`: one member per running export (a
random token), scored with the end of its lease in milliseconds of Redis's clock, so
every instance agrees on time. Taking a slot drops ended leases and adds the new one if
fewer than EXPORTS_PER_ORG remain, in one script. A running export renews its lease
every LEASE_SECONDS / 3 and gives it back when it ends: an instance that crashes frees
its slots when their leases end, LEASE_SECONDS at most.

While Redis cannot be reached no authenticated request gets this far (authn answers 503:
it checks revocation there). If Redis fails in between, or while an export runs, the
export is not refused or stopped for it: the instance then counts its own exports of the
org (at most EXPORTS_PER_ORG per org per instance, and the instance cap always). Fail
open on purpose: the caps share an instance fairly, which local counts still do, and the
pool is safe without them (an export holds no connection while it writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis

from archomata.errors import RateLimited, ServiceUnavailable
from archomata.redis_boundary import REDIS_FAILURES

log = logging.getLogger(__name__)

EXPORTS_PER_ORG = 2
LEASE_SECONDS = 30.0
# How long an export takes is unknown (it follows the client's reading): a short pause.
RETRY_AFTER_SECONDS = 5

# KEYS[1]: the org's slots. ARGV: this export's token, the limit, the lease in ms.
# Returns 1 when the token holds a slot (taken now, or renewed), else 0.
TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


def slots_key(org_id: UUID) -> str:
    return f"exports:{org_id}"


@dataclass
class Lease:
    """One running export's slot. `lost` turns true if a renewal finds the slot taken by
    others (Redis lost it, or renewals failed past the lease): the export must stop."""

    lost: bool = False


class ExportSlots:
    def __init__(self, redis: Redis, per_instance: int,
                 per_org_here: int = EXPORTS_PER_ORG) -> None:
        self._redis = redis
        self._take = redis.register_script(TAKE)
        self._per_instance = per_instance
        # While Redis fails: an org's exports this process runs (a worker's share).
        self._per_org_here = per_org_here
        self._by_org: Counter[UUID] = Counter()

    @property
    def running(self) -> int:
        """Exports running on this instance."""
        return self._by_org.total()

    @contextlib.asynccontextmanager
    async def hold(self, org_id: UUID) -> AsyncIterator[Lease]:
        """A slot for one export of `org_id` while the block runs. Raises RateLimited
        (`too_many_exports`) when the org runs EXPORTS_PER_ORG, ServiceUnavailable
        (`exports_busy`) when this instance runs its cap."""
        self._check_instance()  # before asking Redis: a busy instance answers at once
        token = secrets.token_hex(16)
        shared = await self._claim(org_id, token)
        # From here to the count, no await: concurrent requests see each other's.
        if shared is False or (shared is None and self._by_org[org_id] >= self._per_org_here):
            raise RateLimited(RETRY_AFTER_SECONDS, f"At most {EXPORTS_PER_ORG} exports of "
                              "an organisation run at once; retry when one has ended.",
                              code="too_many_exports", bucket="audit_export")
        try:
            self._check_instance()
        except ServiceUnavailable:
            if shared:
                await self._give_back(org_id, token)
            raise
        self._by_org[org_id] += 1
        lease = Lease()
        renewal = asyncio.create_task(self._renew(org_id, token, lease)) if shared else None
        try:
            yield lease
        finally:
            self._by_org[org_id] -= 1
            if self._by_org[org_id] <= 0:
                del self._by_org[org_id]
            if renewal is not None:
                renewal.cancel()
                await asyncio.wait({renewal})
                await self._give_back(org_id, token)

    def _check_instance(self) -> None:
        if self.running >= self._per_instance:
            raise ServiceUnavailable("This server is running as many exports as it can; "
                                     "retry shortly.", code="exports_busy",
                                     headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def _claim(self, org_id: UUID, token: str) -> bool | None:
        """Whether `token` holds one of the org's slots in Redis; None if Redis failed."""
        try:
            held = await self._take(keys=[slots_key(org_id)],
                                    args=[token, EXPORTS_PER_ORG, int(LEASE_SECONDS * 1000)])
        except REDIS_FAILURES:  # fail open to local counts on purpose (see the module doc)
            log.warning("export slots: Redis unavailable, counting this instance's only")
            return None
        return bool(held)

    async def _renew(self, org_id: UUID, token: str, lease: Lease) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            held = await self._claim(org_id, token)
            if held is False:
                log.warning("export slot lost: the export is stopped",
                            extra={"org_id": str(org_id)})
                lease.lost = True
                return

    async def _give_back(self, org_id: UUID, token: str) -> None:
        # If Redis is unreachable the lease ends on its own.
        with contextlib.suppress(*REDIS_FAILURES):
            await self._redis.zrem(slots_key(org_id), token)
