"""Commands are leased, never lost, never doubled, through the real API on real
PostgreSQL and Redis: a poll that dies holding a command gives it back when its lease
runs out; agents on two instances, dying and losing answers, execute every order once."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from datetime import datetime, timedelta
from typing import Any

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from tests import sockets
from tests.factories import agent_auth, agent_with_key, signed_up, trading_account

LEASE_SECONDS = 1
ORDERS = 120  # placed while agents die and lose answers; ~a quarter see a fault


def leased(config: Config) -> Any:
    return create_app(dataclasses.replace(config, command_lease_seconds=LEASE_SECONDS))


async def order_status(client: Any, auth: dict[str, str], order_id: str) -> str:
    body = await (await client.get(f"/api/v1/orders/{order_id}", headers=auth)).json()
    status: str = body["status"]
    return status


async def commands(client: Any, key: str, wait: int = 0) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/bridge/commands?wait={wait}", headers=agent_auth(key))
    assert response.status == 200, await response.text()
    found: list[dict[str, Any]] = (await response.json())["commands"]
    return found


async def desk(aiohttp_client: Any, config: Config,
               mail_sink: Any) -> tuple[Any, Any, str, dict[str, Any]]:
    """An instance with short leases, listening for wake-ups; an admin, their agent's key
    and an account of that agent."""
    client = await aiohttp_client(leased(config))
    admin = await signed_up(client, mail_sink)
    agent, key = await agent_with_key(client, admin)
    account = await trading_account(client, admin, agent_id=agent["id"])
    await asyncio.wait_for(client.app[keys.BROADCAST].subscribed.wait(), 5)
    return client, admin, key, account


class TestAPollThatDies:
    async def test_the_command_it_took_comes_back_after_the_lease(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client, admin, key, account = await desk(aiohttp_client, config, mail_sink)
        # A long poll on a raw connection: woken by the order, it takes the command...
        dying = await sockets.request(client.port, "/api/v1/bridge/commands?wait=20",
                                      agent_auth(key))
        await asyncio.sleep(0.3)
        placed = await client.post(f"/api/v1/accounts/{account['id']}/orders",
                                   headers=admin.auth, json={"symbol": "EURUSD", "side": "buy",
                                                             "type": "market", "volume": "1"})
        order = await placed.json()
        deadline = time.monotonic() + 5
        while await order_status(client, admin.auth, order["id"]) != "sent":
            assert time.monotonic() < deadline, "the dying poll never took the command"
            await asyncio.sleep(0.05)
        dying.close()  # ...and its agent dies before reading the answer
        assert await commands(client, key) == []  # still with the dead poll's lease
        await asyncio.sleep(LEASE_SECONDS + 0.2)
        [again] = await commands(client, key)
        assert (again["payload"]["order_id"], again["attempt"]) == (order["id"], 2)
        assert again["payload"]["client_tag"] == order["client_tag"]
        reported = await client.post(f"/api/v1/bridge/commands/{again['id']}/result",
                                     json={"status": "filled", "broker_ticket": 1,
                                           "retcode": 10009}, headers=agent_auth(key))
        assert reported.status == 204
        done = await (await client.get(f"/api/v1/orders/{order['id']}",
                                       headers=admin.auth)).json()
        assert (done["status"], done["broker_ticket"], done["retcode"]) == ("filled", 1, 10009)

    async def test_a_poll_whose_client_left_before_any_order_takes_nothing(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client, admin, key, account = await desk(aiohttp_client, config, mail_sink)
        gone = await sockets.request(client.port, "/api/v1/bridge/commands?wait=20",
                                     agent_auth(key))
        await asyncio.sleep(0.3)
        gone.close()
        await asyncio.sleep(0.2)
        await client.post(f"/api/v1/accounts/{account['id']}/orders", headers=admin.auth,
                          json={"symbol": "EURUSD", "side": "buy", "type": "market",
                                "volume": "1"})
        await asyncio.sleep(0.3)  # the abandoned poll was woken and saw no one to hand it to
        [command] = await commands(client, key)
        assert command["attempt"] == 1


class Broker:
    """The MT5 side: what reached it, by the tag each order carries in its comment."""

    def __init__(self) -> None:
        self.executed: dict[str, int] = {}
        self.executions = 0
        self.tickets = itertools.count(100_000)

    async def execute(self, tag: str) -> int:
        """Looks for the tag first, as an agent does with a re-delivered command; the
        look-up and the execution are not atomic (a real terminal's are not either), so a
        command held by two polls at once would be executed twice."""
        if tag in self.executed:
            return self.executed[tag]
        await asyncio.sleep(0.005)
        if tag in self.executed:
            return self.executed[tag]
        self.executions += 1
        self.executed[tag] = next(self.tickets)
        return self.executed[tag]


class TestTwoInstancesUnderFaults:
    async def test_every_order_is_executed_exactly_once(
            self, aiohttp_client: Any, config: Config, mail_sink: Any,
            owner_conn: Any) -> None:
        instances = [await aiohttp_client(leased(config)) for _ in range(2)]
        first = instances[0]
        admin = await signed_up(first, mail_sink)
        agent, key = await agent_with_key(first, admin)
        account = await trading_account(first, admin, agent_id=agent["id"])
        broker, rng = Broker(), random.Random(20261204)
        placed: list[str] = []
        handed: dict[str, list[tuple[int, datetime]]] = {}  # command id -> attempts
        # ORDERS placed on both instances at once, as fast as they are taken, while the
        # agents work: faults need only a second's lease each, not a slow placer's 45 s.
        placing = asyncio.Event()
        settled = asyncio.Event()
        stop_at = time.monotonic() + 90  # reset to 15 s past the last order
        polling = [0, 0]  # polls in flight, per instance
        contended = 0  # commands handed out while the other instance was polling too

        async def place(instance: Any) -> None:
            nonlocal stop_at
            while len(placed) < ORDERS:
                response = await instance.post(
                    f"/api/v1/accounts/{account['id']}/orders", headers=admin.auth,
                    json={"symbol": "EURUSD", "side": "buy", "type": "market",
                          "volume": "0.01"})
                assert response.status == 201
                placed.append((await response.json())["id"])
            if not placing.is_set():
                placing.set()
                stop_at = time.monotonic() + 15

        async def watch() -> None:
            await owner_conn.execute("select set_config('app.platform', 'on', false)")
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.5)
                if placing.is_set() and not await owner_conn.fetchval(
                        "select count(*) from orders where account_id = $1 "
                        "and status <> 'filled'", account["id"]):
                    settled.set()
                    return

        async def poll(n: int) -> list[dict[str, Any]]:
            nonlocal contended
            polling[n] += 1
            try:
                found = await commands(instances[n], key, wait=1)
            finally:
                polling[n] -= 1
            if found and polling[1 - n]:
                contended += len(found)
            return found

        async def agent_loop(n: int) -> None:
            instance = instances[n]
            while time.monotonic() < stop_at and not settled.is_set():
                for command in await poll(n):
                    handed.setdefault(command["id"], []).append(
                        (command["attempt"], datetime.fromisoformat(command["lease_expires_at"])))
                    fate = rng.random()
                    if fate < 0.15:  # the agent dies before it executes
                        continue
                    ticket = await broker.execute(command["payload"]["client_tag"])
                    if fate < 0.3:  # executed, and the answer is lost
                        continue
                    reported = await instance.post(
                        f"/api/v1/bridge/commands/{command['id']}/result",
                        json={"status": "filled", "broker_ticket": ticket},
                        headers=agent_auth(key))
                    assert reported.status in (204, 409), await reported.text()

        await asyncio.gather(*(place(i) for i in instances), watch(),
                             *(agent_loop(n) for n in range(2) for _ in range(2)))
        statuses = await _statuses(first, admin.auth, placed)
        assert len(placed) >= ORDERS and statuses == ["filled"] * len(placed)
        assert broker.executions == len(placed) == len(broker.executed)
        redelivered = [a for a in handed.values() if len(a) > 1]
        assert redelivered, "no fault happened: the test proved nothing"
        # The two instances really claimed side by side: without it, nothing could have
        # handed one command to two polls, and "exactly once" would hold by luck.
        assert contended > len(placed) // 4, (contended, len(placed))
        lease = timedelta(seconds=LEASE_SECONDS)
        for attempts in handed.values():
            assert [n for n, _ in attempts] == list(range(1, len(attempts) + 1))
            # Each attempt handed out only once the previous one's lease had run out.
            for (_, before), (_, after) in itertools.pairwise(attempts):
                assert after - lease >= before


async def _statuses(client: Any, auth: dict[str, str], order_ids: list[str]) -> list[str]:
    return [await order_status(client, auth, order_id) for order_id in order_ids]


class TestAResultFromAnAgentMovedAway:
    async def test_only_the_agent_serving_the_account_now_reports(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client, admin, key_a, account = await desk(aiohttp_client, config, mail_sink)
        agent_b, key_b = await agent_with_key(client, admin, "Terminal B")
        placed = await client.post(f"/api/v1/accounts/{account['id']}/orders",
                                   headers=admin.auth, json={"symbol": "EURUSD", "side": "buy",
                                                             "type": "market", "volume": "1"})
        order = await placed.json()
        [held] = await commands(client, key_a)
        moved = await client.patch(f"/api/v1/accounts/{account['id']}", headers=admin.auth,
                                   json={"agent_id": agent_b["id"]})
        assert moved.status == 200, await moved.text()
        result = {"status": "filled", "broker_ticket": 7, "retcode": 10009}
        late = await client.post(f"/api/v1/bridge/commands/{held['id']}/result",
                                 json=result, headers=agent_auth(key_a))
        assert late.status == 404 and (await late.json())["code"] == "not_found"
        assert await order_status(client, admin.auth, order["id"]) == "sent"
        await asyncio.sleep(LEASE_SECONDS + 0.2)
        [again] = await commands(client, key_b)
        assert (again["id"], again["attempt"]) == (held["id"], 2)
        # A's result from its attempt stays refused; B's is taken.
        assert (await client.post(f"/api/v1/bridge/commands/{held['id']}/result",
                                  json=result, headers=agent_auth(key_a))).status == 404
        taken = await client.post(f"/api/v1/bridge/commands/{again['id']}/result",
                                  json={**result, "broker_ticket": 8}, headers=agent_auth(key_b))
        assert taken.status == 204, await taken.text()
        done = await (await client.get(f"/api/v1/orders/{order['id']}",
                                       headers=admin.auth)).json()
        assert (done["status"], done["broker_ticket"]) == ("filled", 8)
