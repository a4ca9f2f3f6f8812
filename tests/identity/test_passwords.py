"""The bcrypt pool's two lanes: bounded, refusing at once when full, and a job of the other
lane served next, ahead of the full lane's queue (after at most the bcrypt that holds the
thread); on their own and through real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.bridge.api_keys import parse
from archomata.config import Config
from archomata.errors import ServiceUnavailable
from archomata.identity import passwords
from archomata.identity.passwords import Lane, PasswordHasher
from tests.factories import agent_with_key, signed_up

HEARTBEAT = "/api/v1/bridge/heartbeat"
LOGIN = "/api/v1/auth/login"


class Gate(threading.Event):
    """bcrypt checks of a secret starting with `block` hold their thread until set; every
    check notes the start of its secret in `started`, in the order the pool ran them."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    opened = Gate()
    real = passwords.verify_sync

    def verify(password: str, password_hash: str) -> bool:
        opened.started.append(password[:7])
        if password.startswith("block"):
            opened.wait(30)
        return real(password, password_hash)

    monkeypatch.setattr(passwords, "verify_sync", verify)
    yield opened
    opened.set()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def blocked_key(key: str, n: int) -> str:
    parsed = parse(key)
    assert parsed is not None
    return f"amk_{parsed[0]}_block{str(n) * 38}"


def assert_busy(status: int, body: dict[str, Any], headers: Any) -> None:
    assert (status, body["code"]) == (503, "busy")
    assert headers["Retry-After"] == "1"


class TestLanes:
    async def test_a_full_lane_refuses_at_once_and_the_other_lane_still_runs(
            self, gate: Gate) -> None:
        hasher = PasswordHasher(4, threads=1, queue=1)
        password_hash = passwords.hash_sync("right-password", 4)
        try:
            stuck = [asyncio.create_task(hasher.verify(f"block-{n}", password_hash))
                     for n in range(2)]
            await until(lambda: hasher.load(Lane.PEOPLE) == 2)
            with pytest.raises(ServiceUnavailable) as caught:
                await hasher.verify("block-3", password_hash)
            assert caught.value.code == "busy" and caught.value.headers["Retry-After"] == "1"
            other = asyncio.create_task(hasher.verify("right-password", password_hash,
                                                      Lane.API_KEYS))
            await until(lambda: hasher.load(Lane.API_KEYS) == 1)
            gate.set()
            assert await other
            assert await asyncio.gather(*stuck) == [False, False]
            assert gate.started == ["block-0", "right-p", "block-1"]
            assert hasher.load(Lane.PEOPLE) == 0
        finally:
            hasher.close()

    async def test_a_request_that_gives_up_holds_its_slot_until_its_bcrypt_ends(
            self, gate: Gate) -> None:
        hasher = PasswordHasher(4, threads=1, queue=0)
        password_hash = passwords.hash_sync("right-password", 4)
        try:
            running = asyncio.create_task(hasher.verify("block-1", password_hash))
            await until(lambda: hasher.calls == 1)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            # The thread still computes: a new job would only stack up behind it.
            with pytest.raises(ServiceUnavailable):
                await hasher.verify("right-password", password_hash)
            gate.set()
            await until(lambda: hasher.load(Lane.PEOPLE) == 0)
            assert await hasher.verify("right-password", password_hash)
        finally:
            hasher.close()


class TestLanesOverHttp:
    @pytest.fixture
    async def client(self, aiohttp_client: Any, config: Config) -> Any:
        narrow = dataclasses.replace(config, bcrypt_threads=1, bcrypt_queue=1)
        return await aiohttp_client(create_app(narrow))

    async def test_full_login_lane_answers_503_at_once_while_agents_get_in(
            self, client: Any, mail_sink: Any, gate: Gate) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        hasher = client.app[keys.PASSWORDS]
        stuck = []
        for n in range(2):  # one after the other: block-0 is the one the thread runs
            stuck.append(asyncio.create_task(client.post(LOGIN, json={
                "email": admin.email, "password": f"block-{n}"})))
            await until(lambda n=n: hasher.load(Lane.PEOPLE) == n + 1)
        full = await client.post(LOGIN, json={"email": admin.email, "password": "block-3"})
        assert_busy(full.status, await full.json(), full.headers)
        assert not any(task.done() for task in stuck)  # refused without waiting its turn
        # An uncached key: one bcrypt in its own lane, served before the queued login.
        beat = asyncio.create_task(client.post(HEARTBEAT, json={"version": "1"},
                                               headers={"X-API-Key": key}))
        await until(lambda: hasher.load(Lane.API_KEYS) == 1)
        gate.set()
        assert (await beat).status == 200
        assert [r.status for r in await asyncio.gather(*stuck)] == [401, 401]
        secret = parse(key)[1]  # type: ignore[index]
        assert gate.started[-3:] == ["block-0", secret[:7], "block-1"]

    async def test_full_key_lane_answers_503_at_once_while_people_log_in(
            self, client: Any, mail_sink: Any, gate: Gate) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        hasher = client.app[keys.PASSWORDS]
        stuck = []
        for n in range(2):  # one after the other: the first is the one the thread runs
            blocked = {"X-API-Key": blocked_key(key, n)}
            stuck.append(asyncio.create_task(client.post(HEARTBEAT, json={"version": "1"},
                                                         headers=blocked)))
            await until(lambda n=n: hasher.load(Lane.API_KEYS) == n + 1)
        full = await client.post(HEARTBEAT, json={"version": "1"},
                                 headers={"X-API-Key": blocked_key(key, 3)})
        assert_busy(full.status, await full.json(), full.headers)
        assert not any(task.done() for task in stuck)
        signed_in = asyncio.create_task(client.post(LOGIN, json={
            "email": admin.email, "password": admin.password}))
        await until(lambda: hasher.load(Lane.PEOPLE) == 1)
        gate.set()
        assert (await signed_in).status == 200
        assert [r.status for r in await asyncio.gather(*stuck)] == [401, 401]
        assert gate.started[-3:] == ["block00", admin.password[:7], "block11"]
