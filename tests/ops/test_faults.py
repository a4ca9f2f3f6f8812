"""Faults, each on its own throwaway processes and servers, two service instances
throughout: an instance killed outright while agents hold commands, and Redis stopped
under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest

from archomata.ops.devservers import RedisServer, free_port
from tests.factories import agent_auth, agent_with_key, signed_up, trading_account
from tests.serving import Served, serve

LEASE_SECONDS = 2


@pytest.fixture
async def two(environ: dict[str, str], tmp_path: Path) -> AsyncIterator[list[Served]]:
    instances = [await serve(environ, tmp_path, command_lease_seconds=str(LEASE_SECONDS))
                 for _ in range(2)]
    yield instances
    for instance in instances:
        await instance.ended()


async def test_commands_held_by_a_killed_instance_come_back_after_their_lease(
        two: list[Served], mail_sink: Any) -> None:
    doomed, survivor = two
    async with aiohttp.ClientSession(doomed.url) as on_doomed, \
            aiohttp.ClientSession(survivor.url) as on_survivor:
        admin = await signed_up(on_doomed, mail_sink)
        agent, key = await agent_with_key(on_doomed, admin)
        account = await trading_account(on_doomed, admin, agent_id=agent["id"])
        placed = []
        for _ in range(5):
            response = await on_doomed.post(
                f"/api/v1/accounts/{account['id']}/orders", headers=admin.auth,
                json={"symbol": "EURUSD", "side": "buy", "type": "market", "volume": "0.1"})
            placed.append((await response.json())["id"])
        held = (await (await on_doomed.get("/api/v1/bridge/commands",
                                           headers=agent_auth(key))).json())["commands"]
        assert sorted(c["payload"]["order_id"] for c in held) == sorted(placed)
        doomed.kill()  # SIGKILL: no shutdown, the agent's answers never come
        await doomed.process.wait()
        assert (await (await on_survivor.get("/api/v1/bridge/commands",
                                             headers=agent_auth(key))).json()) == {
            "commands": []}  # still leased: never with two polls at once
        await asyncio.sleep(LEASE_SECONDS + 0.3)
        again = (await (await on_survivor.get("/api/v1/bridge/commands",
                                              headers=agent_auth(key))).json())["commands"]
        assert sorted((c["id"], c["attempt"]) for c in again) == sorted(
            (c["id"], 2) for c in held)
        for command in again:
            reported = await on_survivor.post(
                f"/api/v1/bridge/commands/{command['id']}/result",
                json={"status": "filled", "broker_ticket": 1}, headers=agent_auth(key))
            assert reported.status == 204
        for order_id in placed:
            order = await (await on_survivor.get(f"/api/v1/orders/{order_id}",
                                                 headers=admin.auth)).json()
            assert order["status"] == "filled"


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / f"redis-{uuid4().hex[:8]}", free_port(), durable=True)
    server.start()
    yield server
    server.stop()


async def test_redis_stopped_under_load_answers_503_never_200_never_500(
        environ: dict[str, str], tmp_path: Path, mail_sink: Any,
        durable_redis: RedisServer) -> None:
    instances = [await serve(environ, tmp_path, redis_url=durable_redis.url)
                 for _ in range(2)]
    try:
        async with aiohttp.ClientSession(instances[0].url) as setup:
            admin = await signed_up(setup, mail_sink)
        # (instance, asked at, answered at, status) for every request of the run.
        seen: list[tuple[int, float, float, int]] = []
        stop = asyncio.Event()

        async def load(index: int) -> None:
            async with aiohttp.ClientSession(instances[index].url) as http:
                while not stop.is_set():
                    asked = time.monotonic()
                    async with http.get("/api/v1/accounts", headers=admin.auth) as response:
                        await response.read()
                        seen.append((index, asked, time.monotonic(), response.status))
                    await asyncio.sleep(0.01)

        clients = [asyncio.create_task(load(i % 2)) for i in range(6)]
        await asyncio.sleep(1)
        durable_redis.stop()
        down_from = time.monotonic()
        await asyncio.sleep(2)
        down_until = time.monotonic()
        durable_redis.start()  # with its data: the sessions are still there
        await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*clients)
    finally:
        for instance in instances:
            await instance.ended()
    assert not [s for s in seen if s[3] >= 500 and s[3] != 503]
    during = [status for _, asked, answered, status in seen
              if down_from <= asked and answered <= down_until]
    assert during and set(during) == {503}
    back = [(i, status) for i, asked, _, status in seen if asked > down_until + 1]
    assert {i for i, _ in back} == {0, 1} and {status for _, status in back} == {200}
