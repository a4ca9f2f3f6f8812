"""`archomata serve --workers 2`: two processes on one port under a parent that minds them.

The two-instance promises hold between the workers of one process (they share nothing but
PostgreSQL and Redis), `/metrics` sums them whichever answers, a killed worker is
replaced while the port keeps serving, and SIGTERM stops them all gracefully (exit 0)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import asyncpg
import pytest

from archomata.ops.devservers import PostgresServer
from tests.conftest import make_database
from tests.factories import agent_auth, agent_with_key, login, signed_up, trading_account
from tests.serving import Served, serve

PROBE = "/api/v1/org/members"


def workers_of(served: Served) -> set[int]:
    pid = served.process.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


@contextlib.asynccontextmanager
async def workers(environ: dict[str, str], workdir: Path, count: int,
                  **overrides: str) -> AsyncIterator[Served]:
    """`serve --workers count`, once every worker serves and is ready."""
    served = await serve(environ, workdir, "--workers", str(count), **overrides)
    try:
        deadline = time.monotonic() + 30
        while _serving(served) < count or not await _all_ready(served):
            assert time.monotonic() < deadline, served.log.read_text()[-2000:]
            await asyncio.sleep(0.1)
        yield served
    finally:
        await served.ended()
        for child in workers_of(served) if served.process.returncode is None else ():
            os.kill(child, signal.SIGKILL)


@pytest.fixture
async def two_workers(environ: dict[str, str], workdir: Path) -> AsyncIterator[Served]:
    async with workers(environ, workdir, 2, shutdown_grace_seconds="5") as served:
        yield served


async def _all_ready(served: Served) -> bool:
    """Each of a few fresh connections (the kernel spreads them) finds a ready worker."""
    async with _fresh(served) as session:
        for _ in range(8):
            async with session.get("/health/ready") as response:
                if response.status != 200:
                    return False
    return True


def _serving(served: Served) -> int:
    """How many workers have said they serve, since the start."""
    return served.log.read_text().count('"message":"serving"')


def _fresh(served: Served) -> aiohttp.ClientSession:
    """A session that opens a new connection per request, so each may meet either worker."""
    return aiohttp.ClientSession(served.url, connector=aiohttp.TCPConnector(force_close=True))


async def test_the_workers_share_everything_through_postgresql_and_redis(
        two_workers: Served, mail_sink: Any) -> None:
    async with _fresh(two_workers) as client:
        person = await signed_up(client, mail_sink)
        other = await login(client, person.email, person.password)
        for _ in range(10):  # whichever worker: signed in
            assert (await client.get(PROBE, headers=other.auth)).status == 200
        assert (await client.post("/api/v1/auth/logout", headers={
            **other.auth, **other.cookie})).status == 204
        for _ in range(10):  # whichever worker: revoked at once
            assert (await client.get(PROBE, headers=other.auth)).status == 401
        # A long poll on one connection is woken by an order placed on others.
        agent, key = await agent_with_key(client, person)
        account = await trading_account(client, person, agent_id=agent["id"])
        started = time.monotonic()
        poll = asyncio.create_task(client.get("/api/v1/bridge/commands?wait=20",
                                              headers=agent_auth(key)))
        await asyncio.sleep(0.5)
        for _ in range(3):
            placed = await client.post(f"/api/v1/accounts/{account['id']}/orders",
                                       headers=person.auth, json={
                                           "symbol": "EURUSD", "side": "buy",
                                           "type": "market", "volume": "0.01"})
            assert placed.status == 201
        assert (await (await poll).json())["commands"]
        assert time.monotonic() - started < 5


async def test_metrics_sum_the_workers_whichever_answers(two_workers: Served) -> None:
    async with _fresh(two_workers) as client:
        before = await _served_count(client, "/health/live")
        for _ in range(30):
            assert (await client.get("/health/live")).status == 200
        for _ in range(4):  # every worker's answer counts all thirty
            assert await _served_count(client, "/health/live") == before + 30
        await asyncio.sleep(1.5)  # each worker writes its pool gauges every second
        text = await (await client.get("/metrics")).text()
        [size] = re.findall(r"^archomata_db_pool_size (\S+)$", text, re.MULTILINE)
        # Both workers' pools: the instance's minimum of 2, shared, is 1 each.
        assert float(size) >= 2
        # Each worker's own process figures, one series per live worker; the platform's
        # once; the bridge queue's, read at scrape time; no `_created` series.
        pids = re.findall(r'^process_resident_memory_bytes\{pid="(\d+)"\} \S+$', text,
                          re.MULTILINE)
        assert {int(pid) for pid in pids} == workers_of(two_workers)
        assert len(re.findall(r"^python_info\{", text, re.MULTILINE)) == 1
        assert re.search(r'^archomata_bridge_commands\{state="waiting"\} ', text, re.MULTILINE)
        assert "_created" not in text


async def _served_count(client: aiohttp.ClientSession, route: str) -> float:
    text = await (await client.get("/metrics")).text()
    pattern = re.compile(r'^archomata_http_requests_total\{(?P<labels>[^}]*)\} (?P<v>\S+)$',
                         re.MULTILINE)
    return sum(float(m["v"]) for m in pattern.finditer(text)
               if f'route="{route}"' in m["labels"])


async def test_a_killed_worker_is_replaced_and_sigterm_ends_them_all_gracefully(
        two_workers: Served, mail_sink: Any) -> None:
    async with _fresh(two_workers) as client:
        person = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, person)
    first = workers_of(two_workers)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    statuses: list[int] = []
    deadline = time.monotonic() + 30
    async with _fresh(two_workers) as client:
        while not (len(now := workers_of(two_workers)) == 2 and victim not in now
                   and _serving(two_workers) == 3):
            assert time.monotonic() < deadline, "no worker took the killed one's place"
            statuses.append((await client.get("/health/live")).status)
            await asyncio.sleep(0.05)
        assert set(statuses) <= {200}  # the survivor served meanwhile
        assert len(workers_of(two_workers) - first) == 1
        # A long poll waiting when SIGTERM comes answers at once with no commands, then
        # every worker exits, and the parent with 0.
        poll = asyncio.create_task(client.get("/api/v1/bridge/commands?wait=20",
                                              headers=agent_auth(key)))
        await asyncio.sleep(0.5)
        stopped = time.monotonic()
        two_workers.process.send_signal(signal.SIGTERM)
        answered = await poll
        assert answered.status == 200 and await answered.json() == {"commands": []}
        assert time.monotonic() - stopped < 5
    assert await asyncio.wait_for(two_workers.process.wait(), 30) == 0, two_workers.log


RUNTIME_CONNECTIONS = """
    select count(*) from pg_stat_activity where datname = $1 and usename = $2
"""


async def test_the_instance_pool_is_shared_among_the_workers_not_multiplied(
        environ: dict[str, str], workdir: Path, postgres: PostgresServer,
        mail_sink: Any) -> None:
    """DB_POOL_MAX=3 over 2 workers: 2 and 1 (each says so at start); under concurrent
    load on both, PostgreSQL never sees more than 3 connections of the runtime role."""
    urls = await make_database(postgres, "workers_pool")  # its own: no one else's pools
    here = {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
            "ARCHOMATA_DATABASE_OWNER_URL": urls.owner}
    here.pop("ARCHOMATA_DATABASE_POOLER", None)
    database, role = urlsplit(urls.runtime).path.lstrip("/"), unquote(
        urlsplit(urls.runtime).username or "")
    async with workers(here, workdir, 2, db_pool_max="3", db_pool_min="2",
                       exports_per_instance="1") as served:
        lines = [json.loads(line) for line in served.log.read_text().splitlines()
                 if line.startswith("{")]
        shares = [line for line in lines if line["message"] == "worker share"]
        assert sorted((s["worker"], s["workers"], s["db_pool_max"], s["db_pool_min"],
                       s["exports_per_instance"]) for s in shares) \
            == [(0, 2, 2, 1, 1), (1, 2, 1, 1, 1)]
        # One export slot cannot be shared by two: each gets 1, and the parent says so.
        [warned] = [line for line in lines
                    if line["message"].startswith("fewer than one per worker")]
        assert warned["settings"] == ["ARCHOMATA_EXPORTS_PER_INSTANCE=1"]
        owner = await asyncpg.connect(urls.owner)
        seen: list[int] = []
        try:
            async with _fresh(served) as client:
                person = await signed_up(client, mail_sink)

                async def sample() -> None:
                    while True:
                        seen.append(await owner.fetchval(RUNTIME_CONNECTIONS, database, role))
                        await asyncio.sleep(0.01)

                sampler = asyncio.create_task(sample())
                for _ in range(10):  # bursts on fresh connections: both workers busy
                    answers = await asyncio.gather(*(
                        client.get(PROBE, headers=person.auth) for _ in range(60)))
                    assert {a.status for a in answers} == {200}
                    if len(seen) > 20 and max(seen) >= 3:
                        break
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
        finally:
            await owner.close()
    assert max(seen) == 3, seen  # each worker filled its share, and no more
