"""Export slots on the real Redis: two per org across instances, leases that end with a
crashed instance, the per-instance cap, and what holds while Redis is away."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from archomata.audit import export_slots as exports
from archomata.audit.export_slots import EXPORTS_PER_ORG, ExportSlots, slots_key
from archomata.errors import RateLimited, ServiceUnavailable
from archomata.ops.devservers import RedisServer


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()




async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


class TestPerOrg:
    async def test_instances_share_two_slots_per_org_and_other_orgs_have_their_own(
            self, redis: Redis) -> None:
        first, second = ExportSlots(redis, 8), ExportSlots(redis, 8)
        org, other = uuid.uuid4(), uuid.uuid4()
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(first.hold(org))
            await held.enter_async_context(second.hold(org))
            for instance in (first, second):
                with pytest.raises(RateLimited) as refused:
                    await held.enter_async_context(instance.hold(org))
                assert refused.value.code == "too_many_exports"
                assert int(refused.value.headers["Retry-After"]) >= 1
            await held.enter_async_context(second.hold(other))
            assert await redis.zcard(slots_key(org)) == EXPORTS_PER_ORG
            assert (first.running, second.running) == (1, 2)
        assert await redis.zcard(slots_key(org)) == 0
        assert first.running == second.running == 0

    async def test_a_crashed_instances_slot_frees_when_its_lease_ends(
            self, redis: Redis) -> None:
        org, now = uuid.uuid4(), await redis_ms(redis)
        # What two crashed instances left: a lease that has ended, one that has not.
        await redis.zadd(slots_key(org), {"ended": now - 1, "running": now + 60_000})
        slots = ExportSlots(redis, 8)
        async with slots.hold(org):
            with pytest.raises(RateLimited):
                async with slots.hold(org):
                    pass
            assert set(await redis.zrange(slots_key(org), 0, -1)) - {b"running"}
        assert await redis.zrange(slots_key(org), 0, -1) == [b"running"]

    async def test_a_running_export_renews_its_lease_and_stops_when_it_loses_it(
            self, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(exports, "LEASE_SECONDS", 0.3)
        first, second = ExportSlots(redis, 8), ExportSlots(redis, 8)
        org = uuid.uuid4()
        async with first.hold(org) as lease:
            await asyncio.sleep(1)  # three leases long: renewed, so still held
            async with second.hold(org):
                with pytest.raises(RateLimited):
                    async with second.hold(org):
                        pass
            assert not lease.lost
            await redis.delete(slots_key(org))  # Redis lost it; two others take the slots
            async with second.hold(org), second.hold(org):
                await asyncio.sleep(0.5)
                assert lease.lost


class TestPerInstance:
    async def test_exports_refused_for_their_org_never_count_against_the_instance(
            self, redis: Redis) -> None:
        slots, org = ExportSlots(redis, 3), uuid.uuid4()
        entered, release = asyncio.Event(), asyncio.Event()

        async def export() -> str:
            try:
                async with slots.hold(org):
                    entered.set()
                    await release.wait()
            except (RateLimited, ServiceUnavailable) as refused:
                return refused.code
            return "ran"

        running = [asyncio.create_task(export()) for _ in range(20)]
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.sleep(0.1)  # every request has been answered or is running
        release.set()
        outcomes = await asyncio.gather(*running)
        assert sorted(outcomes) == ["ran"] * 2 + ["too_many_exports"] * 18
        async with slots.hold(uuid.uuid4()), slots.hold(uuid.uuid4()), slots.hold(org):
            assert slots.running == 3

    async def test_an_instance_at_its_cap_answers_exports_busy(self, redis: Redis) -> None:
        slots = ExportSlots(redis, 1)
        async with slots.hold(uuid.uuid4()):
            with pytest.raises(ServiceUnavailable) as busy:
                async with slots.hold(uuid.uuid4()):
                    pass
            assert busy.value.code == "exports_busy"
            assert int(busy.value.headers["Retry-After"]) >= 1
        async with slots.hold(uuid.uuid4()):
            pass


class TestWithoutRedis:
    async def test_each_instance_counts_its_own_exports_of_an_org(self, nowhere: Redis) -> None:
        slots = ExportSlots(nowhere, 8)
        org = uuid.uuid4()
        async with slots.hold(org), slots.hold(org), slots.hold(uuid.uuid4()):
            with pytest.raises(RateLimited) as refused:
                async with slots.hold(org):
                    pass
            assert refused.value.code == "too_many_exports"
        async with slots.hold(org):
            assert slots.running == 1
