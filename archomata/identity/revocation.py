"""Revocation and authorisation state: written to Redis, and rebuilt there from PostgreSQL.

PostgreSQL is the source of truth; Redis holds what every request must check, read by
one script call per request (the gate, archomata.gate.check):

    rv:ready:v2         set once the state below was rebuilt from PostgreSQL: the
                        run_id of the server it was rebuilt on (server_watch.py)
    rv:org:{org}        the org is disabled
    rv:user:{uid}       hash: disabled (1), cut (access tokens whose `iat_us` is below it
                        are dead: microseconds on Redis's clock, see sessions.py)
    perm:{org}:{uid}    JSON cache of the membership and permissions, tagged with the
                        org's permission version read in the snapshot it was loaded from
    permv:{org}         the org's permission version, a copy of PostgreSQL's
                        (permission_versions), raised before any change commits: an entry
                        tagged older is stale
    sess:{sid}          the session (see sessions.py): gone means revoked

If Redis loses its data, `rv:ready` is gone with it, and the state is rebuilt from
PostgreSQL before any access token is accepted again; a connection that finds another
Redis server than the one it was rebuilt on, or than before (which may lack the latest
writes), deletes it first (server_watch.py), at start too. If Redis cannot be reached,
authenticated requests fail closed (503).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from aiohttp import web
from redis.asyncio import Redis

from archomata.db import system_tx
from archomata.gate.authz import Authz
from archomata.gate.check import READY, STALE
from archomata.identity import session_scripts
from archomata.identity.server_watch import RUN_ID_LUA
from archomata.identity.store import session_rows
from archomata.redis_boundary import REDIS_FAILURES, redis_call

REBUILD_LOCK = "rv:rebuilding"
AUTHZ_TTL_SECONDS = 300


# KEYS: permv:{org}...; ARGV: their versions. Each only ever goes up.
_RAISE_VERSIONS = """
for i, key in ipairs(KEYS) do
    if tonumber(ARGV[i]) > tonumber(redis.call('GET', key) or '0') then
        redis.call('SET', key, ARGV[i])
    end
end
"""

_RAISE_CUT = """
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'cut') or '0') then
    redis.call('HSET', KEYS[1], 'cut', ARGV[1])
end
"""


# KEYS: rv:ready, rv:stale; ARGV: the stale mark the rebuild began with. Not ready while
# the server was marked stale again meanwhile: the next rebuild ends its families. The
# marker names the server it is set on (its run_id, read in this very script), which every
# new connection, of a running process or of one that starts, checks (server_watch.py).
_MARK_READY = f"""
local stale = tonumber(redis.call('GET', KEYS[2]) or '0')
if stale > tonumber(ARGV[1]) then return 0 end
if stale > 0 then redis.call('DEL', KEYS[2]) end
redis.call('SET', KEYS[1], {RUN_ID_LUA})
return 1
"""


class Revocation:
    def __init__(self, redis: Redis, pool: asyncpg.Pool) -> None:
        self.redis = redis
        self.pool = pool
        self._mark_ready = redis.register_script(_MARK_READY)
        self._raise_cut = redis.register_script(_RAISE_CUT)
        self._raise_versions = redis.register_script(_RAISE_VERSIONS)

    async def rebuild(self) -> None:
        """Re-reads disabled orgs and users, token cut-offs and permission versions from
        PostgreSQL."""
        with redis_call():
            stale = int(await self.redis.get(STALE) or 0)
        async with system_tx(self.pool) as tx:
            orgs = await tx.fetch("select id from orgs where disabled_at is not null")
            versions = await tx.fetch("select org_id, version from permission_versions")
            live_sessions = await session_rows.live(tx)
            ended_sessions = await session_rows.ended(tx) if stale else []
            users = await tx.fetch(
                "select id, disabled_at is not null as disabled, "
                "(extract(epoch from tokens_valid_after) * 1000000)::bigint as cut from users "
                "where disabled_at is not null or tokens_valid_after is not null")
        with redis_call():
            async with self.redis.pipeline(transaction=True) as pipe:
                for org in orgs:
                    pipe.set(f"rv:org:{org['id']}", 1)
                for user in users:
                    if user["disabled"]:
                        pipe.hset(f"rv:user:{user['id']}", "disabled", 1)
                    if user["cut"] is not None:
                        # Never lowered: a cut made while this ran may not be committed
                        # (so not read above) but is already in force.
                        await self._raise_cut(keys=[f"rv:user:{user['id']}"],
                                              args=[user["cut"]], client=pipe)
                # The sessions before the marker: no token is judged against a Redis that
                # has not got the live ones back, or still holds an ended one (a server
                # that lost the latest writes, see server_watch.py).
                await session_scripts.end_all(self.redis, pipe, ended_sessions)
                await session_scripts.restore(self.redis, pipe, live_sessions)
                if versions:
                    await self._raise_versions(
                        keys=[f"permv:{v['org_id']}" for v in versions],
                        args=[v["version"] for v in versions], client=pipe)
                await self._mark_ready(keys=[READY, STALE], args=[stale], client=pipe)
                await pipe.execute()

    async def set_org_disabled(self, org_id: UUID, disabled: bool) -> None:
        await self._write(lambda p: p.set(f"rv:org:{org_id}", 1) if disabled
                          else p.delete(f"rv:org:{org_id}"))

    async def set_user_disabled(self, user_id: UUID, disabled: bool) -> None:
        await self._write(lambda p: p.hset(f"rv:user:{user_id}", "disabled", 1) if disabled
                          else p.hdel(f"rv:user:{user_id}", "disabled"))

    async def raise_versions(self, versions: Mapping[UUID, int]) -> None:
        """The new permission versions of a change about to commit (archomata.db): every
        instance reloads on the next request of every member of those orgs. Redis down:
        ServiceUnavailable, and the change is rolled back rather than committed unseen."""
        orgs = sorted(versions)
        with redis_call():
            await self._raise_versions(keys=[f"permv:{org}" for org in orgs],
                                       args=[versions[org] for org in orgs])

    async def cache_authz(self, org_id: UUID, user_id: UUID, version: int,
                          authz: Authz | None) -> None:
        value: dict[str, object] = {"v": version, "member": authz is not None}
        if authz is not None:
            value.update(role=authz.org_role, perms=sorted(authz.permissions),
                         mfa=authz.org_requires_mfa)
        # Only a cache: if it cannot be written, the next request loads from PostgreSQL.
        with contextlib.suppress(*REDIS_FAILURES):
            await self.redis.set(f"perm:{org_id}:{user_id}", orjson.dumps(value),
                                 ex=AUTHZ_TTL_SECONDS)

    async def _write(self, queue: Any) -> None:
        with redis_call():
            async with self.redis.pipeline(transaction=False) as pipe:
                queue(pipe)
                await pipe.execute()


# This component's app key: beside its class, not in archomata.keys (which says why).
REVOCATION = web.AppKey("revocation", Revocation)
