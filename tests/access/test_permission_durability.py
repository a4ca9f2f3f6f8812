"""A permission change cannot be lost to Redis: its version lives in PostgreSQL and
Redis hears of it before the COMMIT, so a Redis that stops at that moment rolls the change
back (503, nothing committed that a cache has not heard of), and a Redis that returns
with its data serves no instance a removed role; one that returns without the raise (an
older snapshot, a replica behind) has it raised again from PostgreSQL first."""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import uuid4

import orjson
import pytest
from redis.asyncio import Redis

from archomata import keys
from archomata.access import roles
from archomata.access.principal import PlatformRole
from archomata.app import create_app
from archomata.config import Config, Secret
from archomata.db import system_tx
from archomata.errors import ServiceUnavailable
from archomata.gate.check import judge
from archomata.identity.tokens import Claims
from archomata.ops.devservers import RedisServer
from tests.factories import member_with_roles, signed_up

PROBE = "/api/v1/accounts"  # accounts:read, which the Viewer role grants


async def instances(aiohttp_client: Any, config: Config, redis: RedisServer) -> list[Any]:
    on_it = dataclasses.replace(config, redis_url=Secret(redis.url))
    return [await aiohttp_client(create_app(on_it)) for _ in range(2)]


async def statuses(instances: list[Any], member: Any) -> list[int]:
    return [(await i.get(PROBE, headers=member.auth)).status for i in instances]


async def test_redis_stopping_as_a_change_commits_rolls_it_back_and_nothing_goes_stale(
        aiohttp_client: Any, config: Config, mail_sink: Any, owner_conn: Any,
        durable_redis: RedisServer) -> None:
    first, second = both = await instances(aiohttp_client, config, durable_redis)
    admin = await signed_up(first, mail_sink)
    assert admin.org_id is not None
    member = await member_with_roles(first, mail_sink, owner_conn, admin.org_id, ["Viewer"])
    assert await statuses(both, member) == [200, 200]  # cached on both instances

    async def change_as_redis_stops() -> None:
        """The change is written, and Redis goes away before it commits."""
        async with system_tx(first.app[keys.DB_POOL]) as tx:
            await roles.set_for_member(tx, admin.org_id, member.user_id, [])
            durable_redis.stop()

    with pytest.raises(ServiceUnavailable):
        await change_as_redis_stops()
    durable_redis.start()  # back, with everything it had
    assert await owner_conn.fetchval(
        "select count(*) from member_roles where org_id = $1 and user_id = $2",
        admin.org_id, member.user_id) == 1
    assert await statuses(both, member) == [200, 200]  # the role was never removed
    removed = await second.put(f"/api/v1/org/members/{member.user_id}/roles",
                               headers=admin.auth, json={"role_ids": []})
    assert removed.status == 200, await removed.text()
    assert await statuses(both, member) == [403, 403]
    durable_redis.stop()
    durable_redis.start()
    assert await statuses(both, member) == [403, 403]


async def test_a_bump_lost_with_redis_after_the_commit_is_raised_again_from_postgresql(
        aiohttp_client: Any, config: Config, mail_sink: Any, owner_conn: Any,
        forgetful_redis: RedisServer) -> None:
    """The issue's "Redis stopped between the commit and the bump": the change commits,
    and the Redis that comes back has not heard of it (a snapshot from before, with the
    entry cached under the old version). Each instance meets another server on its next
    connection and raises the versions from PostgreSQL before judging anything."""
    first, second = both = await instances(aiohttp_client, config, forgetful_redis)
    admin = await signed_up(first, mail_sink)
    assert admin.org_id is not None
    member = await member_with_roles(first, mail_sink, owner_conn, admin.org_id, ["Viewer"])
    assert await statuses(both, member) == [200, 200]  # cached on both instances
    await first.app[keys.REDIS].save()  # what Redis will come back with
    removed = await second.put(f"/api/v1/org/members/{member.user_id}/roles",
                               headers=admin.auth, json={"role_ids": []})
    assert removed.status == 200, await removed.text()
    assert forgetful_redis.proc is not None
    forgetful_redis.proc.kill()  # the bump goes with it
    forgetful_redis.proc.wait()
    forgetful_redis.start()
    raw = Redis.from_url(forgetful_redis.url)
    try:  # the old entry, under the old version, is what this Redis holds
        cached = orjson.loads(await raw.get(f"perm:{admin.org_id}:{member.user_id}"))
        assert "accounts:read" in cached["perms"]
        assert int(await raw.get(f"permv:{admin.org_id}") or 0) <= cached["v"]
    finally:
        await raw.aclose()
    assert await statuses(both, member) == [403, 403]


class TestTheCachedEntrysTag:
    """gate.check.judge, on the gate's reply: (ready, session, disabled, cut,
    org disabled, the cached entry, the org's version in Redis)."""

    @staticmethod
    def judged(tag: int, version: int) -> Any:
        claims = Claims(uuid4(), uuid4(), uuid4(), PlatformRole.USER, 0, 0, "t", 1)
        entry = orjson.dumps({"v": tag, "member": True, "role": "member",
                              "perms": ["accounts:read"]})
        return judge(claims, [1, 1, None, None, 0, entry, str(version).encode()])

    def test_an_entry_read_before_a_change_redis_has_heard_of_is_stale(self) -> None:
        result = self.judged(tag=4, version=5)
        assert result.cached_authz_stale and result.authz is None

    def test_an_entry_read_at_the_current_version_is_served(self) -> None:
        result = self.judged(tag=5, version=5)
        assert not result.cached_authz_stale
        assert result.authz is not None and result.authz.permissions == {"accounts:read"}

    def test_an_entry_newer_than_redis_knows_is_served(self) -> None:
        """Read after a change whose raise Redis then lost (a replica behind): what it
        says is at least as new as that change."""
        assert not self.judged(tag=6, version=5).cached_authz_stale
