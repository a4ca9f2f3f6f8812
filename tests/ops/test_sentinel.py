"""Redis Sentinel (`redis+sentinel://`): the service follows the master Sentinel names.

Real processes, started here: a master, its replica and a Sentinel (redis-server in
Sentinel mode). The master is killed under load on two instances: the answers are 200 or
503 (never 500, never a stale 200) while Sentinel fails over, then 200 again on the
promoted replica; no session is lost, revocations hold, and the pub/sub listeners come
back (a long poll is woken across instances again)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from archomata import keys
from archomata.config import Config
from tests.factories import (
    agent_auth,
    agent_with_key,
    login,
    refresh_cookie_of,
    signed_up,
    trading_account,
)
from tests.identity.test_auth import refresh
from tests.identity.test_durable_sessions import on
from tests.servers.sentinel import SentinelGroup

PROBE = "/api/v1/org/members"


@pytest.fixture
def group(workdir: Path) -> Iterator[SentinelGroup]:
    servers = SentinelGroup(workdir / f"sentinel-{uuid4().hex[:8]}")
    servers.start()
    yield servers
    servers.stop()


async def _until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.1)


async def test_a_killed_master_is_followed_to_the_promoted_replica(
        aiohttp_client: Any, config: Config, mail_sink: Any, group: SentinelGroup) -> None:
    first = await on(aiohttp_client, config, group)
    second = await on(aiohttp_client, config, group)
    person = await signed_up(first, mail_sink)
    agent, key = await agent_with_key(first, person)
    account = await trading_account(first, person, agent_id=agent["id"])
    assert (await second.get(PROBE, headers=person.auth)).status == 200
    old_master = group.master_port()

    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def load(instance: Any) -> None:
        while not stop.is_set():
            response = await instance.get(PROBE, headers=person.auth)
            statuses[response.status] += 1
            await response.release()
            await asyncio.sleep(0.01)

    loaders = [asyncio.create_task(load(i)) for i in (first, second, first, second)]
    await asyncio.sleep(0.5)
    group.kill_master()
    await _until(lambda: _promoted(group, old_master), 30, "a replica promoted")

    async def serving() -> bool:
        both = [await i.get(PROBE, headers=person.auth) for i in (first, second)]
        return all(r.status == 200 for r in both)

    await _until(serving, 30, "both instances serving again")
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*loaders)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[200] > 0

    # No session lost: the cookie rotates on the new master, a new login works.
    renewed = await refresh(second, person.refresh or "")
    assert renewed.status == 200, await renewed.text()
    assert refresh_cookie_of(renewed) not in (None, person.refresh)
    other = await login(second, person.email, person.password)
    # A revocation on one instance holds on the other at once: no stale 200.
    assert (await first.post("/api/v1/auth/logout", headers={
        **other.auth, **other.cookie})).status == 204
    assert (await second.get(PROBE, headers=other.auth)).status == 401

    # The listeners came back: a long poll on one instance is woken by an order on the other.
    await asyncio.wait_for(second.app[keys.BROADCAST].subscribed.wait(), 15)
    started = time.monotonic()
    poll = asyncio.create_task(second.get("/api/v1/bridge/commands?wait=20",
                                          headers=agent_auth(key)))
    await asyncio.sleep(0.3)
    placed = await first.post(f"/api/v1/accounts/{account['id']}/orders", headers=person.auth,
                              json={"symbol": "EURUSD", "side": "buy", "type": "market",
                                    "volume": "0.01"})
    assert placed.status == 201
    assert len((await (await poll).json())["commands"]) == 1
    assert time.monotonic() - started < 5


async def _promoted(group: SentinelGroup, old_master: int) -> bool:
    return await asyncio.to_thread(group.master_port) not in (None, old_master)
