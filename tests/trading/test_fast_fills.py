"""Risk limits against fills faster than state pushes (archomata.trading.risk, `Exposure.held`):
a filled order counts until a push that arrived after it, a filled close reduces until
then, a position already being closed is not closed twice, and twenty orders racing an
agent's fills never leave more open than the limit."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

from archomata.trading.store import market
from tests.bridge.test_routes import position, state
from tests.factories import Session, agent_auth
from tests.trading.test_orders import desk, place

LIMITS = {"trading_enabled": True, "max_order_volume": None, "max_open_positions": None,
          "max_daily_loss": None}


async def set_limits(client: Any, admin: Session, account: dict[str, Any], **limits: Any) -> None:
    response = await client.put(f"/api/v1/accounts/{account['id']}/risk-limits",
                                json={**LIMITS, **limits}, headers=admin.auth)
    assert response.status == 200, await response.text()


async def assert_open_positions_breach(response: Any) -> None:
    assert response.status == 422, await response.text()
    body = await response.json()
    assert (body["code"], list(body["errors"])) == ("risk_limit_exceeded",
                                                   ["max_open_positions"])


class Terminal:
    """An MT5 terminal behind an agent, as the bridge sees one: it fills every command at
    the broker, then reports the result; it pushes what it holds. One turn at a time per
    account, as an EA's loop runs, so a push never crosses a result it reports."""

    def __init__(self, client: Any, key: str, login: int) -> None:
        self.client, self.auth, self.login = client, agent_auth(key), login
        self.positions: dict[int, dict[str, Any]] = {}
        self.tickets = iter(range(700001, 800000))
        self.peak = 0
        self.turn = asyncio.Lock()

    async def poll(self, wait: int = 0) -> list[dict[str, Any]]:
        response = await self.client.get(f"/api/v1/bridge/commands?wait={wait}",
                                         headers=self.auth)
        assert response.status == 200, await response.text()
        return (await response.json())["commands"]

    async def fill(self, command: dict[str, Any], status: str = "filled") -> int:
        async with self.turn:
            if command["type"] == "close_position":
                ticket = command["payload"]["ticket"]
                if status == "filled":
                    self.positions.pop(ticket, None)
            else:
                ticket = next(self.tickets)
                if status == "filled":
                    self.positions[ticket] = position(ticket)
            self.peak = max(self.peak, len(self.positions))
            reported = await self.client.post(
                f"/api/v1/bridge/commands/{command['id']}/result", headers=self.auth,
                json={"status": status, "broker_ticket": ticket, "price": "1.08500"})
            assert reported.status == 204, await reported.text()
            return ticket

    async def push(self) -> None:
        async with self.turn:
            pushed = await self.client.put(
                f"/api/v1/bridge/accounts/{self.login}/state", headers=self.auth,
                json=state(*self.positions.values()))
            assert pushed.status == 204, await pushed.text()


class TestFilledOrdersCount:
    async def test_a_reported_fill_counts_until_a_push_after_it_says_what_is_open(
            self, client: Any, mail_sink: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        await set_limits(client, admin, account, max_open_positions=1)
        assert (await place(client, admin, account)).status == 201
        [command] = await terminal.poll()
        ticket = await terminal.fill(command)
        # Filled, not pushed yet: the position is held all the same.
        await assert_open_positions_breach(await place(client, admin, account))
        await terminal.push()  # shows it: counted once, from the push
        await assert_open_positions_breach(await place(client, admin, account))
        await set_limits(client, admin, account, max_open_positions=2)
        assert (await place(client, admin, account)).status == 201
        await assert_open_positions_breach(await place(client, admin, account))
        # The broker closed it (a stop loss): the next push no longer shows it.
        terminal.positions.pop(ticket)
        await terminal.push()
        assert (await place(client, admin, account)).status == 201

    async def test_a_push_already_under_way_when_the_fill_is_recorded_leaves_it_counted(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        await set_limits(client, admin, account, max_open_positions=1)
        assert (await place(client, admin, account)).status == 201
        [command] = await terminal.poll()
        push = owner_conn.transaction()
        await push.start()  # a push that began before the fill: it cannot show it
        await owner_conn.execute("update accounts set state_updated_at = now() "
                                 "where id = $1::uuid", account["id"])
        await terminal.fill(command)
        await owner_conn.execute(market.DELETE_POSITIONS, admin.org_id, UUID(account["id"]))
        await push.commit()
        await assert_open_positions_breach(await place(client, admin, account))

    async def test_four_fast_fills_at_a_limit_of_one_leave_one_open(
            self, client: Any, mail_sink: Any) -> None:
        """The reported case: each order filled before the next, no push in between."""
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        await set_limits(client, admin, account, max_open_positions=1)
        statuses = []
        for _ in range(4):
            statuses.append((await place(client, admin, account)).status)
            for command in await terminal.poll():
                await terminal.fill(command)
        assert statuses == [201, 422, 422, 422]
        assert len(terminal.positions) == 1

    async def test_a_filled_close_frees_its_place_before_the_push(
            self, client: Any, mail_sink: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        terminal.positions[10] = position(10)
        await terminal.push()
        await set_limits(client, admin, account, max_open_positions=1)
        await assert_open_positions_breach(await place(client, admin, account))
        closed = await client.post(f"/api/v1/accounts/{account['id']}/positions/10/close",
                                   headers=admin.auth)
        assert closed.status == 201, await closed.text()
        # A close on its way may still be rejected: it frees nothing yet.
        await assert_open_positions_breach(await place(client, admin, account))
        [command] = await terminal.poll()
        await terminal.fill(command)
        assert (await place(client, admin, account)).status == 201
        await assert_open_positions_breach(await place(client, admin, account))

    async def test_rejected_and_failed_orders_do_not_count(
            self, client: Any, mail_sink: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        await set_limits(client, admin, account, max_open_positions=1)
        for status in ("rejected", "error"):
            assert (await place(client, admin, account)).status == 201
            [command] = await terminal.poll()
            await terminal.fill(command, status)
        assert (await place(client, admin, account)).status == 201


class TestClosingTwice:
    async def test_a_position_being_closed_answers_409_position_closing(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        terminal.positions[4242] = position(4242)
        await terminal.push()
        # Closing stays open when trading is off; closing twice does not.
        await set_limits(client, admin, account, trading_enabled=False)
        url = f"/api/v1/accounts/{account['id']}/positions/4242/close"
        assert (await client.post(url, headers=admin.auth)).status == 201

        async def refused() -> None:
            again = await client.post(url, headers=admin.auth)
            assert again.status == 409, await again.text()
            assert (await again.json())["code"] == "position_closing"

        await refused()  # pending
        [command] = await terminal.poll()
        await refused()  # sent
        await terminal.fill(command)
        await refused()  # filled, the position still in the last push
        closes = await owner_conn.fetchval(
            "select count(*) from orders where account_id = $1::uuid and position_ticket = 4242",
            account["id"])
        assert closes == 1
        await terminal.push()  # after the fill, without the position
        gone = await client.post(url, headers=admin.auth)
        assert gone.status == 404

    async def test_a_rejected_close_can_be_tried_again_and_a_push_reopens_the_question(
            self, client: Any, mail_sink: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        terminal.positions[77] = position(77)
        await terminal.push()
        url = f"/api/v1/accounts/{account['id']}/positions/77/close"
        assert (await client.post(url, headers=admin.auth)).status == 201
        [command] = await terminal.poll()
        await terminal.fill(command, "rejected")
        assert (await client.post(url, headers=admin.auth)).status == 201
        [command] = await terminal.poll()
        await terminal.fill(command)
        terminal.positions[77] = position(77)  # the broker still reports it open
        await terminal.push()
        assert (await client.post(url, headers=admin.auth)).status == 201


class TestRace:
    async def test_twenty_orders_racing_fills_and_pushes_never_exceed_the_limit(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        limit = 3
        admin, account, key = await desk(client, mail_sink)
        terminal = Terminal(client, key, account["login"])
        await set_limits(client, admin, account, max_open_positions=limit)
        placing = True

        async def trader(i: int) -> int:
            await asyncio.sleep((i % 5) * 0.04)  # four at once, five waves
            return (await place(client, admin, account)).status

        async def agent() -> None:
            while True:
                commands = await terminal.poll(wait=1)
                await asyncio.gather(*(terminal.fill(c) for c in commands))
                if not placing and not commands:
                    return

        async def pusher() -> None:
            while placing:
                await terminal.push()
                await asyncio.sleep(0.03)

        background = [asyncio.ensure_future(agent()), asyncio.ensure_future(pusher())]
        statuses = await asyncio.gather(*(trader(i) for i in range(20)))
        placing = False
        await asyncio.gather(*background)
        await terminal.push()
        assert terminal.peak <= limit
        assert sorted(statuses) == [201] * limit + [422] * (20 - limit)
        assert await owner_conn.fetchval(
            "select count(*) from positions where account_id = $1::uuid",
            account["id"]) == limit
        rejected = await owner_conn.fetch(
            "select details from audit_log where org_id = $1 and action = 'order.rejected'",
            admin.org_id)
        assert {json.loads(r["details"])["limit"] for r in rejected} == {"max_open_positions"}
