"""Agent API keys: `amk_<key id>_<secret>`, sent as `X-API-Key` on the bridge.

Only a bcrypt hash of the secret is stored; the key id locates the row, so a key costs
one bcrypt at most. A verified key is then served from a small in-memory cache:

- keyed by the SHA-256 of the key, never the key itself; bounded (LRU) and every entry
  dies `CACHE_TTL_SECONDS` after the lookup that made it began, whatever happens;
- rotating or deleting a key sets `rv:apikey:{key id}` in Redis (before the change
  commits) for longer than that TTL, then broadcasts the key id (archomata.bridge.broadcast) so
  every instance drops its entry at once. The marker is read on every request in the
  same script call as the rest, so the old key fails on the very next request on every
  instance even if a broadcast is lost.

Every bridge request costs one Redis call (a script): the bridge rate limit of the client IP,
`rv:ready`, `rv:org:{org}` (a disabled org stops its agents at once), the key marker and
the key id's throttle state. A malformed key or an unknown key id is refused without
hashing; every attempt counts against the bridge rate limit first.

A known key id with wrong secrets would still cost one bcrypt each (the cache and the
in-flight sharing are keyed on the whole key). So each key id has, in Redis for every
instance, a count of secrets not yet proven right (`ak:{key id}:tries`): a bcrypt is
spent only after reserving one of KEY_FREE_TRIES in a KEY_TRIES_WINDOW_SECONDS window
(a match gives its reservation back). Once they are used up, further unknown secrets for
that key id get 429 `api_key_throttled` without bcrypt, even before the database is read,
except from a client address the key was proven from lately (`ak:{key id}:ips`), so an
agent whose entry is not cached (a new instance, a restart) still gets in. A valid key in
the cache never meets the throttle, which is why the cache may live for minutes: the
revocation marker is read on every request anyway. bcrypt itself runs in the hasher's
API-key lane, bounded apart from logins (archomata.identity.passwords).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
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

from archomata.access.principal import ActorType, Principal
from archomata.bridge import agents
from archomata.db import service_tx
from archomata.errors import RateLimited, Unauthorized
from archomata.gate.check import READY, call_gate, client_bucket
from archomata.gate.ratelimit import OPTIONAL_HIT
from archomata.identity.passwords import Lane, PasswordHasher
from archomata.identity.revocation import Revocation
from archomata.redis_boundary import REDIS_FAILURES, redis_call

PREFIX = "amk_"
KEY_ID_HEX = 16
SECRET_BYTES = 32
KEY_PATTERN = re.compile(rf"{PREFIX}([0-9a-f]{{{KEY_ID_HEX}}})_([A-Za-z0-9_-]{{43}})")
# Long, since every request reads the revocation marker whatever the cache says; the TTL
# only bounds a revocation whose marker Redis lost without losing `rv:ready` (a failover
# to a replica that missed the write), and each expiry costs the agent one bcrypt.
CACHE_TTL_SECONDS = 300.0
CACHE_MAX_ENTRIES = 10_000
# Outlives any cache entry made before the key was revoked (see KeyCache.put).
REVOKED_MARKER_SECONDS = int(CACHE_TTL_SECONDS) + 20
# Wrong secrets a key id may cost bcrypt for, per window, before it is throttled.
KEY_FREE_TRIES = 5
KEY_TRIES_WINDOW_SECONDS = 60
# How long a client address the key was proven from may still spend bcrypt on it.
KEY_KNOWN_ADDRESS_SECONDS = 86_400


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


def tries_key(key_id: str) -> str:
    return f"ak:{{{key_id}}}:tries"


def addresses_key(key_id: str) -> str:
    return f"ak:{{{key_id}}}:ips"


def _throttled(wait_ms: int) -> RateLimited:
    error = RateLimited(math.ceil(max(wait_ms, 1) / 1000),
                        "Too many wrong secrets for this API key; retry later.",
                        bucket="agent_key")
    error.code = "api_key_throttled"
    return error


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


# KEYS (after OPTIONAL_HIT's): rv:ready, rv:org:{org}, rv:apikey:{key id}, the key id's
# tries and addresses. ARGV[3]: the client's address. Returns {rate reply or false, ready,
# org disabled, key revoked, tries, tries' ms to live, address known}.
BRIDGE_GATE = OPTIONAL_HIT + """
return {rate, redis.call('EXISTS', KEYS[first]), redis.call('EXISTS', KEYS[first + 1]),
        redis.call('EXISTS', KEYS[first + 2]),
        tonumber(redis.call('GET', KEYS[first + 3]) or '0'), redis.call('PTTL', KEYS[first + 3]),
        redis.call('SISMEMBER', KEYS[first + 4], ARGV[3])}
"""
# KEYS: tries, addresses. ARGV: free tries, window ms, the client's address.
# Returns {reserved 0|1, ms until the window ends}.
RESERVE_TRY = """
local tries = tonumber(redis.call('GET', KEYS[1]) or '0')
if tries >= tonumber(ARGV[1]) and redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, 0}
"""
# KEYS: tries, addresses. ARGV: the client's address, how long to remember it in ms.
PROVEN_TRY = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class _State:
    ready: bool
    org_disabled: bool
    key_revoked: bool
    tries: int = 0
    tries_ms_left: int = 0
    address_known: bool = False

    @property
    def throttled(self) -> bool:
        return self.tries >= KEY_FREE_TRIES and not self.address_known


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
        self._reserve = redis.register_script(RESERVE_TRY)
        self._proven = redis.register_script(PROVEN_TRY)

    async def principal(self, request: web.Request, key: str) -> Principal:
        parsed = parse(key)
        # Only a well-formed (ASCII) key is hashed: a header's undecodable bytes arrive as
        # lone surrogates, which str.encode refuses (a 500 once).
        digest = hashlib.sha256(key.encode()).digest() if parsed else b""
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
            if state.throttled and state.ready:
                raise _throttled(state.tries_ms_left)
            identity = await self._verified(digest, *parsed, client_bucket(request))
            state = await self._check(request, None, identity.org_id, rate=False)
        if state.org_disabled:
            raise Unauthorized("This organisation is disabled.", code="org_disabled")
        return Principal(ActorType.AGENT, identity.agent_id, identity.org_id)

    async def revoke(self, key_id: str) -> None:
        """Marks the key dead for every instance, for longer than any cache entry lives
        (call inside the transaction that changes the key)."""
        self.cache.drop_key_id(key_id)
        with redis_call():
            await self.redis.set(revoked_marker(key_id), 1, ex=REVOKED_MARKER_SECONDS)

    async def _check(self, request: web.Request, key_id: str | None, org_id: UUID | None,
                     rate: bool = True) -> _State:
        """One script call: the bridge rate limit (counted on every attempt, good or bad)
        and the revocation state."""
        reply = await call_gate(self._gate, request if rate else None, [
            READY, f"rv:org:{org_id}" if org_id else "rv:org:-",
            revoked_marker(key_id) if key_id else "rv:apikey:-",
            tries_key(key_id or "-"), addresses_key(key_id or "-")],
            refuse_now=True, extra_args=[client_bucket(request) if request else "-"])
        return _State(bool(reply[0]), bool(reply[1]), bool(reply[2]), int(reply[3]),
                      int(reply[4]), bool(reply[5]))

    async def _rebuild(self) -> None:
        # Redis lost its state: revocation markers may be gone with it, so trust no cache.
        self.cache.clear()
        async with self._rebuilding:
            with redis_call():
                ready = await self.redis.exists(READY)
            if not ready:
                await self.revocation.rebuild()

    async def _verified(self, digest: bytes, key_id: str, secret: str,
                        address: str) -> AgentIdentity:
        """The key's agent after one bcrypt; concurrent requests with the same key share it."""
        cached = self.cache.get(digest)  # filled while this request waited for Redis?
        if cached is not None:
            return cached
        future = self._inflight.get(digest)
        if future is None:
            future = asyncio.ensure_future(self._lookup(digest, key_id, secret, address))
            self._inflight[digest] = future
            future.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return await asyncio.shield(future)

    async def _lookup(self, digest: bytes, key_id: str, secret: str,
                      address: str) -> AgentIdentity:
        stamp = self.cache.stamp()
        # The key id is the caller's, but only this one row is read (a transaction that
        # sees no org, through sql/009's function), and nothing is trusted before bcrypt
        # has matched the secret against it: the org comes from it.
        async with service_tx(self.pool) as tx:
            record = await agents.find_key(tx, key_id)
        if record is None:
            raise _invalid()
        await self._reserve_try(key_id, address)
        if not await self.hasher.verify(secret, record.key_hash, Lane.API_KEYS):
            raise _invalid()
        await self._proven_try(key_id, address)
        if record.org_disabled:
            raise Unauthorized("This organisation is disabled.", code="org_disabled")
        identity = AgentIdentity(record.agent_id, record.org_id, key_id)
        self.cache.put(digest, identity, stamp)
        return identity

    async def _reserve_try(self, key_id: str, address: str) -> None:
        """Takes one of the key id's free tries (or refuses without bcrypt)."""
        with redis_call():
            reserved, wait_ms = await self._reserve(
                keys=[tries_key(key_id), addresses_key(key_id)],
                args=[KEY_FREE_TRIES, KEY_TRIES_WINDOW_SECONDS * 1000, address])
        if not reserved:
            raise _throttled(int(wait_ms))

    async def _proven_try(self, key_id: str, address: str) -> None:
        """Gives the try back and remembers the address: the secret matched."""
        # The key is good: what Redis misses here only throttles this id a little early.
        with contextlib.suppress(*REDIS_FAILURES):
            await self._proven(keys=[tries_key(key_id), addresses_key(key_id)],
                               args=[address, KEY_KNOWN_ADDRESS_SECONDS * 1000])


# This component's app key: beside its class, not in archomata.keys (which says why).
API_KEYS = web.AppKey("api_keys", ApiKeyAuthenticator)
