"""Graceful shutdown of `archomata serve` under load: on SIGTERM new connections are
refused, readiness answers 503, long polls answer at once with no commands, what is in
flight is answered, nothing answers 5xx, and the process exits 0 within the grace."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from tests.factories import agent_auth, agent_with_key, signed_up, trading_account
from tests.serving import Served, serve

GRACE_SECONDS = 15


@pytest.fixture
async def serving(environ: dict[str, str], tmp_path: Path) -> AsyncIterator[Served]:
    served = await serve(environ, tmp_path, shutdown_grace_seconds=str(GRACE_SECONDS))
    yield served
    await served.ended()


class Outcomes:
    """What each request came to: a status, refused before it was sent, or cut."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.refused = 0
        self.cut: list[str] = []


async def load(port: int, path: str, headers: dict[str, str], outcomes: Outcomes,
               stop: asyncio.Event) -> None:
    """One client on one kept-alive connection, asking again and again. A request on a
    kept-alive connection the server closed while idle is retried once on a new one, as
    HTTP clients do (RFC 9112 9.3.1): the server never saw it."""
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as http:
        while not stop.is_set():
            for retry in (False, True):
                try:
                    async with http.get(path, headers=headers) as response:
                        await response.read()
                        outcomes.statuses.append(response.status)
                    break
                except aiohttp.ClientConnectorError:
                    outcomes.refused += 1
                    return  # the listener is closed: this client is done
                except aiohttp.ServerDisconnectedError as exc:
                    if retry:
                        outcomes.cut.append(repr(exc))
                        return
                except aiohttp.ClientError as exc:
                    outcomes.cut.append(repr(exc))
                    return


async def test_sigterm_under_load_answers_everything_in_flight_and_exits_0(
        serving: Served, mail_sink: Any) -> None:
    process, port, log = serving.process, serving.port, serving.log
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
        admin = await signed_up(http, mail_sink)
        agent, key = await agent_with_key(http, admin)
        await trading_account(http, admin, agent_id=agent["id"])
        polls = [asyncio.create_task(http.get("/api/v1/bridge/commands?wait=25",
                                              headers=agent_auth(key))) for _ in range(2)]
        outcomes, stop = Outcomes(), asyncio.Event()
        clients = [asyncio.create_task(load(port, "/api/v1/accounts", admin.auth, outcomes,
                                            stop)) for _ in range(12)]
        await asyncio.sleep(2)  # under load, the polls waiting
        assert not any(p.done() for p in polls)
        answered_before = len(outcomes.statuses)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for poll in polls:
            response = await asyncio.wait_for(poll, 10)
            assert (response.status, await response.json()) == (200, {"commands": []})
        assert time.monotonic() - signalled < 5  # at once, not at the end of their wait
        await asyncio.wait_for(process.wait(), GRACE_SECONDS + 10)
        stop.set()
        await asyncio.gather(*clients)
    stderr = log.read_bytes()
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    assert answered_before > 50 and outcomes.refused > 0
    assert outcomes.cut == []
    assert all(status < 500 for status in outcomes.statuses), sorted(set(outcomes.statuses))


async def test_readiness_answers_503_once_the_process_stops_taking_work(
        aiohttp_client: Any, config: Config) -> None:
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/health/ready")).status == 200
    await client.app.shutdown()  # what the runner does on SIGTERM, before the grace
    stopping = await client.get("/health/ready")
    assert stopping.status == 503
    assert (await stopping.json())["checks"]["process"] == "stopping"
    assert (await client.get("/health/live")).status == 200
    assert client.app[keys.STOPPING].is_set()
