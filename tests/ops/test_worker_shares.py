"""The instance settings shared among `serve --workers N`: each worker's share, at least 1,
the shares summing to the setting; the in-memory stand-ins for Redis's limits allow a
worker its share. The whole process under load: tests/ops/test_workers.py."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from archomata import keys
from archomata.app import create_app
from archomata.audit.export_slots import ExportSlots
from archomata.config import Config, ConfigError, RateLimit, WorkerSlot
from archomata.errors import RateLimited
from archomata.gate.ratelimit import PendingHit, RateLimiter
from archomata.identity.login_throttle import LoginThrottle
from archomata.ops.workers import over_shared, this_worker, worker_config


def shares(total: int, count: int, floor: int = 1) -> list[int]:
    return [WorkerSlot(i, count).share(total, floor) for i in range(count)]


class TestShare:
    @pytest.mark.parametrize(("total", "count", "expected"), [
        (10, 3, [4, 3, 3]), (10, 1, [10]), (3, 2, [2, 1]), (8, 4, [2, 2, 2, 2]),
        (11, 4, [3, 3, 3, 2]), (160, 16, [10] * 16)])
    def test_the_remainder_goes_one_each_to_the_first_and_the_parts_sum_to_the_whole(
            self, total: int, count: int, expected: list[int]) -> None:
        assert shares(total, count) == expected
        assert sum(shares(total, count)) == total

    def test_every_worker_gets_at_least_one(self) -> None:
        assert shares(2, 3) == [1, 1, 1]
        assert shares(1, 16) == [1] * 16

    def test_a_floor_of_zero_lets_a_worker_have_none(self) -> None:
        assert shares(2, 3, floor=0) == [1, 1, 0]

    def test_every_count_and_total_sums_to_the_setting_when_it_covers_the_workers(
            self) -> None:
        for count in range(1, 17):
            for total in range(count, 200):
                parts = shares(total, count)
                assert sum(parts) == total and max(parts) - min(parts) <= 1


class TestWorkerConfig:
    def test_each_instance_setting_is_divided_and_the_rest_kept(self, config: Config) -> None:
        whole = dataclasses.replace(config, db_pool_min=2, db_pool_max=10, bcrypt_threads=3,
                                    bcrypt_queue=16, exports_per_instance=8)
        mine = [worker_config(whole, WorkerSlot(i, 3)) for i in range(3)]
        assert [c.db_pool_max for c in mine] == [4, 3, 3]
        assert [c.db_pool_min for c in mine] == [1, 1, 0]
        assert [c.bcrypt_threads for c in mine] == [1, 1, 1]
        assert [c.bcrypt_queue for c in mine] == [6, 5, 5]
        assert [c.exports_per_instance for c in mine] == [3, 3, 2]
        assert [c.worker for c in mine] == [WorkerSlot(i, 3) for i in range(3)]
        # The limits Redis keeps are every process's already: whole.
        assert {c.rate_limit_login for c in mine} == {whole.rate_limit_login}
        assert {c.login_backoff_after for c in mine} == {whole.login_backoff_after}

    def test_a_pool_minimum_never_exceeds_the_workers_maximum(self, config: Config) -> None:
        whole = dataclasses.replace(config, db_pool_min=10, db_pool_max=10)
        mine = [worker_config(whole, WorkerSlot(i, 16)) for i in range(16)]
        assert [c.db_pool_max for c in mine] == [1] * 16
        assert [c.db_pool_min for c in mine] == [1] * 10 + [0] * 6
        whole = dataclasses.replace(config, db_pool_min=9, db_pool_max=5)  # min above max
        assert [worker_config(whole, WorkerSlot(i, 2)).db_pool_min for i in range(2)] == [3, 2]

    def test_the_parent_names_settings_the_workers_outnumber(self, config: Config) -> None:
        whole = dataclasses.replace(config, db_pool_max=10, bcrypt_threads=1, bcrypt_queue=16,
                                    exports_per_instance=8)
        set_threads = {"ARCHOMATA_BCRYPT_THREADS": "1"}
        assert over_shared(whole, 2, set_threads) == ["ARCHOMATA_BCRYPT_THREADS=1"]
        assert over_shared(whole, 16, set_threads) == ["ARCHOMATA_DB_POOL_MAX=10",
                                                       "ARCHOMATA_BCRYPT_THREADS=1",
                                                       "ARCHOMATA_EXPORTS_PER_INSTANCE=8"]
        # The default threads (cores - 1) under `--workers auto`: 1 each, by design.
        assert over_shared(whole, 2, {}) == []


class TestThisWorker:
    @pytest.mark.parametrize("slot", [{}, {"ARCHOMATA_WORKER_SLOT": "2",
                                           "ARCHOMATA_WORKER_COUNT": "2"},
                                      {"ARCHOMATA_WORKER_SLOT": "x",
                                       "ARCHOMATA_WORKER_COUNT": "2"}])
    def test_a_worker_without_a_slot_of_its_parent_is_refused(
            self, monkeypatch: pytest.MonkeyPatch, slot: dict[str, str]) -> None:
        for name in ("ARCHOMATA_WORKER_SLOT", "ARCHOMATA_WORKER_COUNT"):
            monkeypatch.delenv(name, raising=False)
        for name, value in slot.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match="serve --workers N"):
            this_worker()

    def test_the_parents_slot_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ARCHOMATA_WORKER_SLOT", "1")
        monkeypatch.setenv("ARCHOMATA_WORKER_COUNT", "3")
        assert this_worker() == WorkerSlot(1, 3)


class TestInMemoryShares:
    def test_the_rate_limit_in_memory_allows_the_workers_share(self, nowhere: Redis) -> None:
        limiter = RateLimiter(nowhere, share=WorkerSlot(1, 3).share)
        pending = PendingHit("rl:share", RateLimit(10, 60))
        allowed = [limiter.result_from(pending, ConnectionError("down")).allowed
                   for _ in range(6)]
        assert allowed == [True] * 3 + [False] * 3
        # Redis's answer is judged against the whole limit.
        assert limiter.result_from(pending, [1, 0, 9, 0]).limit == 10

    async def test_the_login_backoff_in_memory_starts_after_the_workers_share(
            self, nowhere: Redis) -> None:
        throttle = LoginThrottle(nowhere, free_failures=5, max_seconds=60, base_seconds=30,
                                 local_free_failures=WorkerSlot(1, 2).share(5))
        waits = [await throttle.record_failure("user:share") for _ in range(3)]
        assert waits == [0, 0, 30]
        with pytest.raises(RateLimited):
            await throttle.check("user:share")

    async def test_an_orgs_exports_in_memory_are_the_workers_share(
            self, nowhere: Redis) -> None:
        slots, org = ExportSlots(nowhere, 8, per_org_here=1), uuid.uuid4()
        async with slots.hold(org):
            with pytest.raises(RateLimited):
                async with slots.hold(org):
                    pass
            async with slots.hold(uuid.uuid4()):  # another org has its own
                pass

    async def test_the_app_builds_them_with_the_workers_share(
            self, aiohttp_client: Any, config: Config) -> None:
        mine = worker_config(dataclasses.replace(config, rate_limit_api=RateLimit(10, 60)),
                             WorkerSlot(1, 3))
        client = await aiohttp_client(create_app(mine))
        app = client.server.app
        pending = PendingHit(f"rl:app:{uuid.uuid4()}", RateLimit(10, 60))
        limiter = app[keys.RATE_LIMITER]
        allowed = [limiter.result_from(pending, ConnectionError("down")).allowed
                   for _ in range(4)]
        assert allowed == [True] * 3 + [False]
        assert app[keys.LOGIN_THROTTLE]._local_free == WorkerSlot(1, 3).share(
            config.login_backoff_after)
        assert app[keys.EXPORTS]._per_org_here == 1
        assert app[keys.EXPORTS]._per_instance == mine.exports_per_instance
        assert app[keys.DB_POOL].get_max_size() == mine.db_pool_max  # the share: 3 of 10
