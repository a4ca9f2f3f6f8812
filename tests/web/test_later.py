"""Work left for after an answer: finished before a stopping app closes its pools, cut
(and said so) past the bound, and a failure logged, never raised."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from archomata.db import service_tx
from archomata.web.later import Later
from tests.factories import strong_password, unique_email


async def test_a_registration_answered_just_before_shutdown_is_still_written(
        aiohttp_client: Any, config: Config, mail_sink: Any, owner_conn: Any) -> None:
    client = await aiohttp_client(create_app(config))
    email = unique_email("late")
    response = await client.post("/api/v1/auth/register", json={
        "email": email, "password": strong_password(), "name": "Late", "org_name": "Late"})
    assert response.status == 201
    user_id = (await response.json())["user"]["id"]
    await client.close()  # the app's cleanup: the work after the answer is awaited first
    assert str(await owner_conn.fetchval("select id from users where email = $1",
                                         email)) == user_id
    assert any("verify" in m["Subject"].lower() for m in mail_sink.to(email))


async def test_a_stopping_app_finishes_the_work_before_its_pools_close(
        aiohttp_client: Any, config: Config) -> None:
    client = await aiohttp_client(create_app(config))
    app = client.app
    done: list[int] = []

    async def slow_write() -> None:
        await asyncio.sleep(0.3)  # still under way when the app is told to stop
        async with service_tx(app[keys.DB_POOL]) as tx:
            done.append(await tx.fetchval("select 1"))

    app[keys.LATER].run(slow_write(), "slow")
    await client.close()
    assert done == [1]


async def test_drain_waits_then_cuts_what_outlives_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    later = Later()
    done: list[str] = []

    async def work(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        done.append(name)

    later.run(work("quick", 0.01), "quick")
    later.run(work("endless", 60), "endless")
    with caplog.at_level(logging.WARNING, logger="archomata.web.later"):
        await later.drain(0.2)
    assert done == ["quick"] and later.running == 0
    assert "cut at shutdown" in caplog.text


async def test_a_failure_is_logged_by_its_kind_only(caplog: pytest.LogCaptureFixture) -> None:
    later = Later()

    async def failing() -> None:
        raise ValueError("secret-token-value")

    with caplog.at_level(logging.ERROR, logger="archomata.web.later"):
        later.run(failing(), "mail")
        await later.drain(1)
    [record] = [r for r in caplog.records if r.name == "archomata.web.later"]
    assert record.__dict__["what"] == "mail" and record.__dict__["error"] == "ValueError"
    assert "secret-token-value" not in caplog.text
