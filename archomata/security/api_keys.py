"""Agent API keys: `amk_<key id>_<secret>`, sent as `X-API-Key` on the bridge.

Only a bcrypt hash of the secret is stored; the key id locates the row, so a key costs
one bcrypt at most. A verified key is then served from a small in-memory cache:

- keyed by the SHA-256 of the key, never the key itself; bounded (LRU) and every entry
  dies `CACHE_TTL_SECONDS` after the lookup that made it began, whatever happens;
- rotating or deleting a key sets `rv:apikey:{key id}` in Redis (before the change
  commits) for longer than that TTL, then broadcasts the key id (archomata.broadcast) so
  every instance drops its entry at once. The marker is read on every request in the
  same script call as the rest, so the old key fails on the very next request on every
  instance even if a broadcast is lost.

Every bridge request costs one Redis call (a script): the bridge rate limit of the client IP,
`rv:ready`, `rv:org:{org}` (a disabled org stops its agents at once) and the key marker.
A malformed key or an unknown key id is refused without hashing; every attempt counts
against the bridge rate limit first, so a flood of wrong keys cannot burn bcrypt.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from archomata.db import system_tx
from archomata.errors import ServiceUnavailable, Unauthorized
from archomata.middlewares.ratelimit import call_gate
from archomata.security.passwords import PasswordHasher
from archomata.security.principal import ActorType, Principal
from archomata.security.ratelimit import OPTIONAL_HIT
from archomata.security.revocation import READY, Revocation
from archomata.store import agents

PREFIX = "amk_"
KEY_ID_HEX = 16
SECRET_BYTES = 32
KEY_PATTERN = re.compile(rf"{PREFIX}([0-9a-f]{{{KEY_ID_HEX}}})_([A-Za-z0-9_-]{{43}})")
CACHE_TTL_SECONDS = 10.0
CACHE_MAX_ENTRIES = 10_000
# Outlives any cache entry made before the key was revoked (see KeyCache.put).
REVOKED_MARKER_SECONDS = int(CACHE_TTL_SECONDS) + 20


def new_key() -> tuple[str, str, str]:
    """A fresh key: (key id, secret, the key as the agent sends it). Shown once."""
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return key_id, secret, f"{PREFIX}{key_id}_{secret}"


def parse(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = KEY_PATTERN.fullmatch(key)
    return (match[1], match[2]) if match else None


def revoked_marker(key_id: str) -> str:
    return f"rv:apikey:{key_id}"


def _invalid() -> Unauthorized:
    # One answer for malformed, unknown, wrong and revoked keys: nothing to probe.
    return Unauthorized("The API key is invalid.", code="invalid_api_key")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    agent_id: UUID
    org_id: UUID
    key_id: str


class KeyCache:
    """Verified keys by SHA-256 digest: bounded, LRU, each entry with a hard expiry."""

    def __init__(self, ttl: float = CACHE_TTL_SECONDS, max_entries: int = CACHE_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[AgentIdentity, float]] = OrderedDict()
        self._generation = 0

    def stamp(self) -> tuple[int, float]:
        """Taken before a lookup begins; `put` refuses a lookup an invalidation overtook."""
        return self._generation, self._clock()

    def get(self, digest: bytes) -> AgentIdentity | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry[0]

    def put(self, digest: bytes, identity: AgentIdentity, stamp: tuple[int, float]) -> None:
        generation, started = stamp
        if generation != self._generation:
            return  # a key was revoked while this lookup ran: it may have read the old row
        self._entries[digest] = (identity, started + self.ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop_key_id(self, key_id: str) -> None:
        self._generation += 1
        for digest in [d for d, (i, _) in self._entries.items() if i.key_id == key_id]:
            del self._entries[digest]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# KEYS (after OPTIONAL_HIT's): rv:ready, rv:org:{org}, rv:apikey:{key id}.
# Returns {rate reply or false, ready, org disabled, key revoked}.
BRIDGE_GATE = OPTIONAL_HIT + """
return {rate, redis.call('EXISTS', KEYS[first]), redis.call('EXISTS', KEYS[first + 1]),
        redis.call('EXISTS', KEYS[first + 2])}
"""


@dataclass(frozen=True, slots=True)
class _State:
    ready: bool
    org_disabled: bool
    key_revoked: bool


class ApiKeyAuthenticator:
    def __init__(self, redis: Redis, pool: asyncpg.Pool, hasher: PasswordHasher,
                 revocation: Revocation, cache: KeyCache | None = None) -> None:
        self.redis = redis
        self.pool = pool
        self.hasher = hasher
        self.revocation = revocation
        self.cache = cache or KeyCache()
        self._inflight: dict[bytes, asyncio.Future[AgentIdentity]] = {}
        self._rebuilding = asyncio.Lock()
        self._gate = redis.register_script(BRIDGE_GATE)  # EVALSHA, reloaded if flushed

    async def principal(self, request: web.Request, key: str) -> Principal:
        parsed = parse(key)
        digest = hashlib.sha256(key.encode()).digest()
        cached = self.cache.get(digest) if parsed else None
        state = await self._check(request, parsed[0] if parsed else None,
                                  cached.org_id if cached else None)
        if parsed is None:
            raise _invalid()
        if not state.ready:
            await self._rebuild()
        if state.key_revoked:
            self.cache.drop_key_id(parsed[0])
            raise _invalid()
        identity = cached
        if identity is None or not state.ready:
            identity = await self._verified(digest, *parsed)
            state = await self._check(request, None, identity.org_id, rate=False)
        if state.org_disabled:
            raise Unauthorized("This organisation is disabled.", code="org_disabled")
        return Principal(ActorType.AGENT, identity.agent_id, identity.org_id)

    async def revoke(self, key_id: str) -> None:
        """Marks the key dead for every instance, for longer than any cache entry lives
        (call inside the transaction that changes the key)."""
        self.cache.drop_key_id(key_id)
        try:
            await self.redis.set(revoked_marker(key_id), 1, ex=REVOKED_MARKER_SECONDS)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc

    async def _check(self, request: web.Request, key_id: str | None, org_id: UUID | None,
                     rate: bool = True) -> _State:
        """One script call: the bridge rate limit (counted on every attempt, good or bad)
        and the revocation state."""
        reply = await call_gate(self._gate, request if rate else None, [
            READY, f"rv:org:{org_id}" if org_id else "rv:org:-",
            revoked_marker(key_id) if key_id else "rv:apikey:-"], refuse_now=True)
        return _State(bool(reply[0]), bool(reply[1]), bool(reply[2]))

    async def _rebuild(self) -> None:
        # Redis lost its state: revocation markers may be gone with it, so trust no cache.
        self.cache.clear()
        async with self._rebuilding:
            if not await self.redis.exists(READY):
                await self.revocation.rebuild()

    async def _verified(self, digest: bytes, key_id: str, secret: str) -> AgentIdentity:
        """The key's agent after one bcrypt; concurrent requests with the same key share it."""
        cached = self.cache.get(digest)  # filled while this request waited for Redis?
        if cached is not None:
            return cached
        future = self._inflight.get(digest)
        if future is None:
            future = asyncio.ensure_future(self._lookup(digest, key_id, secret))
            self._inflight[digest] = future
            future.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return await asyncio.shield(future)

    async def _lookup(self, digest: bytes, key_id: str, secret: str) -> AgentIdentity:
        stamp = self.cache.stamp()
        # The key id is the caller's, but only this one row is read, and nothing is
        # trusted before bcrypt has matched the secret against it: the org comes from it.
        async with system_tx(self.pool) as tx:
            record = await agents.find_key(tx, key_id)
        if record is None:
            raise _invalid()
        if not await self.hasher.verify(secret, record.key_hash):
            raise _invalid()
        if record.org_disabled:
            raise Unauthorized("This organisation is disabled.", code="org_disabled")
        identity = AgentIdentity(record.agent_id, record.org_id, key_id)
        self.cache.put(digest, identity, stamp)
        return identity

