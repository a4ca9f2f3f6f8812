"""Faults, each on its own throwaway processes and servers, two service instances
throughout: an instance killed outright while agents hold commands, and Redis stopped
under load."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from archomata.ops.devservers import (
    DatabaseUrls,
    PostgresServer,
    RedisServer,
    create_database,
    free_port,
    new_password,
)
from archomata.ops.migrations import migrate
from tests import secret_scan
from tests.conftest import OWNER_PASSWORD, RUNTIME_PASSWORD
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


def fast_stop(server: PostgresServer) -> None:
    """SIGINT: PostgreSQL's fast shutdown, which ends every client's connection at once
    (SIGTERM would wait for the service's pool to leave)."""
    assert server.proc is not None
    server.proc.send_signal(signal.SIGINT)
    server.proc.wait(30)
    server.proc = None


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[tuple[PostgresServer, DatabaseUrls]]:
    # Durable: a commit it acknowledged is on disk, as in production.
    server = PostgresServer(tmp_path / "postgres", free_port(), new_password(), durable=True)
    secret_scan.remember(server.superuser_password)
    await asyncio.to_thread(server.start)
    try:
        urls = await create_database(server, "faults", OWNER_PASSWORD, RUNTIME_PASSWORD)
        await migrate(urls.owner, urls.runtime)
        yield server, urls
    finally:
        server.stop()


async def test_postgres_restarted_under_load_loses_and_doubles_nothing_acknowledged(
        environ: dict[str, str], tmp_path: Path, mail_sink: Any,
        own_postgres: tuple[PostgresServer, DatabaseUrls]) -> None:
    postgres, urls = own_postgres
    instances = [await serve(environ, tmp_path, database_url=urls.runtime,
                             database_owner_url=urls.owner) for _ in range(2)]
    statuses: list[int] = []
    acknowledged: set[str] = set()
    try:
        async with aiohttp.ClientSession(instances[0].url) as setup:
            admin = await signed_up(setup, mail_sink)
            agent, _ = await agent_with_key(setup, admin)
            account = await trading_account(setup, admin, agent_id=agent["id"])
        stop = asyncio.Event()
        tags = itertools.count()

        async def trader(index: int) -> None:
            """Places orders, each retried with its client_order_id until answered."""
            async with aiohttp.ClientSession(instances[index % 2].url) as http:
                while not stop.is_set():
                    order_id = f"fault-{index}-{next(tags)}"
                    while True:
                        async with http.post(
                                f"/api/v1/accounts/{account['id']}/orders",
                                headers=admin.auth,
                                json={"symbol": "EURUSD", "side": "buy", "type": "market",
                                      "volume": "0.01", "client_order_id": order_id}) as r:
                            await r.read()
                            statuses.append(r.status)
                        if r.status in (200, 201):
                            acknowledged.add(order_id)
                            break
                        assert r.status == 503, r.status  # anything else: a bug
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(0.02)

        traders = [asyncio.create_task(trader(i)) for i in range(4)]
        await asyncio.sleep(1.5)
        await asyncio.to_thread(fast_stop, postgres)  # as `pg_ctl restart -m fast` does
        await asyncio.sleep(2)
        await asyncio.to_thread(postgres.start)  # it waits for readiness with a loop of its own
        await asyncio.sleep(3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*traders), 30)
    finally:
        for instance in instances:
            await instance.ended()
    assert set(statuses) <= {200, 201, 503}, sorted(set(statuses))
    assert 503 in statuses and statuses[-1] in (200, 201)
    conn = await asyncpg.connect(urls.owner)
    try:
        await conn.execute("select set_config('app.platform', 'on', false)")
        stored = [r["client_order_id"] for r in await conn.fetch(
            "select client_order_id from orders where account_id = $1", account["id"])]
    finally:
        await conn.close()
    assert len(stored) == len(set(stored))  # nothing doubled
    assert acknowledged <= set(stored)  # nothing acknowledged lost
