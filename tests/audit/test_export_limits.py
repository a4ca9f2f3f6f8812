"""Audit exports cannot starve other tenants: on real servers, with clients that open an
export and never read it, so that the service's writes block.

Each test serves the app as `archomata serve` does (archomata.http.server), on a database of
this module's own: the bulk entries stand outside the hash chain (see BULK).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from archomata import keys
from archomata.app import create_app
from archomata.audit.export_slots import slots_key
from archomata.config import Config, load_config
from archomata.http import server
from archomata.ops.devservers import DatabaseUrls
from tests import sockets
from tests.audit.test_routes import BULK, csv_rows
from tests.conftest import environ_for, make_database
from tests.factories import Session, signed_up

EXPORT = "/api/v1/audit-logs/export?format=csv"
# Some 13 MB of CSV: far more than the socket buffers of both ends hold, so a client
# that reads nothing blocks the service's writes.
ENTRIES = 40_000


@pytest.fixture(scope="module")
async def export_db(postgres: Any) -> DatabaseUrls:
    return await make_database(postgres, "audit_export_limits")


@pytest.fixture
def export_config(export_db: DatabaseUrls, redis_server: Any, mail_sink: Any) -> Config:
    return load_config(environ_for(export_db, redis_server.url, mail_sink.port))


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[int, web.Application]]:
    runner = await server.start(create_app(config), config, host="127.0.0.1", port=0)
    try:
        yield runner.addresses[0][1], runner.app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def api(port: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A client of the served app that the factories can use as they use the test client."""
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as client:
        yield client


async def hog(client: Any, mail_sink: Any, urls: DatabaseUrls) -> Session:
    """A new org with ENTRIES audit entries to export."""
    admin = await signed_up(client, mail_sink)
    owner = await asyncpg.connect(urls.owner)
    try:
        await owner.execute(BULK.format(org=admin.org_id, actor=admin.user_id, entries=ENTRIES))
    finally:
        await owner.close()
    return admin


async def stalled(port: int, session: Session, count: int) -> list[sockets.RawClient]:
    return list(await asyncio.gather(*(sockets.request(port, EXPORT, session.auth)
                                       for _ in range(count))))


async def refusal(client: sockets.RawClient,
                  head: tuple[int, dict[str, str]] | None = None) -> tuple[int, str, str | None]:
    """Status, problem code and Retry-After of an answer that is a problem (its head read
    already, or not yet). Closes the client: nothing more comes on it."""
    try:
        status, headers = head or await client.head()
        problem = json.loads(await client.body(headers))
    finally:
        client.close()
    return status, problem["code"], headers.get("retry-after")


async def eventually(check: Callable[[], bool | Awaitable[bool]], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if await outcome if isinstance(outcome, Awaitable) else outcome:
            return
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


def pool_is_idle(app: web.Application) -> bool:
    pool = app[keys.DB_POOL]
    return pool.get_idle_size() == pool.get_size()


async def exported(urls: DatabaseUrls, session: Session) -> int:
    owner = await asyncpg.connect(urls.owner)
    try:
        return await owner.fetchval("select count(*) from audit_log where org_id = $1 and "
                                    "action = 'audit.exported'", session.org_id)
    finally:
        await owner.close()


async def timed(call: Awaitable[aiohttp.ClientResponse]) -> tuple[int, float]:
    started = time.monotonic()
    async with asyncio.timeout(5):  # a starved request fails here rather than hanging
        response = await call
        await response.read()
    return response.status, time.monotonic() - started


class TestStalledExports:
    async def test_twenty_stalled_exports_of_one_org_starve_neither_other_orgs_nor_the_pool(
            self, export_config: Config, export_db: DatabaseUrls, mail_sink: Any) -> None:
        async with serving(export_config) as (port, app), api(port) as client:
            greedy = await hog(client, mail_sink, export_db)
            other = await signed_up(client, mail_sink)
            exports = await stalled(port, greedy, 20)
            try:
                heads = await asyncio.gather(*(e.head() for e in exports),
                                             return_exceptions=True)
                await asyncio.sleep(1)  # the running exports fill every buffer on the way
                for _ in range(3):
                    for call in (client.get("/api/v1/audit-logs", headers=other.auth),
                                 client.get("/api/v1/org/members", headers=other.auth),
                                 client.post("/api/v1/auth/login", json={
                                     "email": other.email, "password": other.password}),
                                 client.get("/health/ready")):
                        status, seconds = await timed(call)
                        assert status == 200
                        assert seconds < 1, f"{seconds:.2f} s"
                assert sorted(h[0] if isinstance(h, tuple) else h for h in heads) == \
                    [200] * 2 + [429] * 18
                refused = [(e, h) for e, h in zip(exports, heads, strict=True) if h[0] == 429]
                for status, code, retry_after in [await refusal(*r) for r in refused]:
                    assert (status, code) == (429, "too_many_exports")
                    assert retry_after is not None and int(retry_after) >= 1
                # The two exports still run, blocked in their writes, holding no connection.
                # (The last answers may still be giving their connections back.)
                await eventually(lambda: pool_is_idle(app), seconds=5)
                assert app[keys.EXPORTS].running == 2
            finally:
                for e in exports:
                    e.close()
            await eventually(lambda: app[keys.EXPORTS].running == 0)
            assert await app[keys.REDIS].zcard(slots_key(greedy.org_id)) == 0
        assert await exported(export_db, greedy) == 2  # a refused export is not one

    async def test_the_third_export_of_an_org_is_refused_on_any_instance_and_others_export(
            self, export_config: Config, export_db: DatabaseUrls, mail_sink: Any) -> None:
        async with serving(export_config) as (port, first), \
                serving(export_config) as (other_port, second), api(port) as client:
            greedy = await hog(client, mail_sink, export_db)
            other = await signed_up(client, mail_sink)
            held = await stalled(port, greedy, 2)
            try:
                assert [(await e.head())[0] for e in held] == [200, 200]
                third = await sockets.request(other_port, EXPORT, greedy.auth)
                status, code, retry_after = await refusal(third)
                assert (status, code) == (429, "too_many_exports")
                assert retry_after is not None and int(retry_after) >= 1
                assert second[keys.EXPORTS].running == 0
                for instance in (port, other_port):
                    response = await client.get(f"http://127.0.0.1:{instance}{EXPORT}",
                                                headers=other.auth)
                    assert response.status == 200
                    rows = csv_rows(await response.text())
                    assert {r["org_id"] for r in rows} == {str(other.org_id)}
                held.pop().close()  # one export ends: its slot is free, on every instance
                await eventually(lambda: first[keys.EXPORTS].running == 1)
                again = await sockets.request(other_port, EXPORT, greedy.auth)
                held.append(again)
                assert (await again.head())[0] == 200
            finally:
                for e in held:
                    e.close()

    async def test_an_export_whose_client_reads_nothing_is_cut_and_frees_its_slot(
            self, export_config: Config, export_db: DatabaseUrls, mail_sink: Any) -> None:
        quick = dataclasses.replace(export_config, stream_stall_seconds=1)
        async with serving(quick) as (port, app), api(port) as client:
            greedy = await hog(client, mail_sink, export_db)
            held = await stalled(port, greedy, 2)
            try:
                assert [(await e.head())[0] for e in held] == [200, 200]
                assert (await refusal(await sockets.request(port, EXPORT, greedy.auth)))[:2] \
                    == (429, "too_many_exports")
                # Reading nothing meanwhile (reading would be progress): both are cut.
                await eventually(lambda: app[keys.EXPORTS].running == 0)
                assert pool_is_idle(app)
                for export in held:
                    received = await export.until_cut()  # a hang fails here
                    assert not received.endswith(b"0\r\n\r\n")  # never a complete-looking file
                response = await client.get(EXPORT, headers=greedy.auth)
                assert response.status == 200
                assert len(csv_rows(await response.text())) == ENTRIES + 5
            finally:
                for e in held:
                    e.close()
