"""The MT5 bridge through the real API, on real PostgreSQL and Redis: an agent's key,
its accounts, state and deals, and the command queue."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from tests.factories import (
    agent_auth,
    agent_with_key,
    member_with_roles,
    signed_up,
    trading_account,
)


def deal(ticket: int, /, **overrides: Any) -> dict[str, Any]:
    return {"ticket": ticket, "order_ticket": ticket + 100000, "position_id": ticket,
            "symbol": "EURUSD", "side": "buy", "volume": "0.10", "price": "1.08500",
            "profit": "12.50", "commission": "-0.70", "swap": "0.00",
            "executed_at": datetime.now(UTC).isoformat(), **overrides}


def state(*positions: dict[str, Any]) -> dict[str, Any]:
    return {"balance": "10000.00", "equity": "10012.50", "margin": "108.50",
            "free_margin": "9904.00", "currency": "USD", "positions": list(positions)}


def position(ticket: int, /, **overrides: Any) -> dict[str, Any]:
    return {"ticket": ticket, "symbol": "EURUSD", "side": "buy", "volume": "0.10",
            "open_price": "1.08500", "current_price": "1.08625", "sl": None, "tp": "1.09000",
            "profit": "12.50", "opened_at": "2026-11-28T09:30:00Z", **overrides}


async def audit_rows(owner_conn: Any, org_id: Any, action: str) -> list[Any]:
    return await owner_conn.fetch(
        "select actor_type, actor_id, resource_id, details from audit_log "
        "where org_id = $1 and action = $2 order by occurred_at", org_id, action)


class TestFullLoop:
    async def test_agent_reports_trader_orders_agent_fills_trader_sees(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"], login=5550001,
                                        password="broker-password-1")
        bridge = agent_auth(key)

        beat = await client.post("/api/v1/bridge/heartbeat",
                                 json={"version": "1.4.2", "terminals": [{"build": 4620}]},
                                 headers=bridge)
        assert beat.status == 200, await beat.text()
        assert datetime.fromisoformat((await beat.json())["server_time"]).tzinfo is not None
        seen = await (await client.get(f"/api/v1/agents/{agent['id']}", headers=admin.auth)).json()
        assert seen["online"] is True
        assert seen["version"] == "1.4.2"

        fetched = await client.get("/api/v1/bridge/accounts", headers=bridge)
        assert fetched.status == 200
        items = (await fetched.json())["items"]
        assert [(a["login"], a["credentials"]) for a in items] == [
            (5550001, {"password": "broker-password-1"})]
        fetch_audit = await audit_rows(owner_conn, admin.org_id, "agent.credentials_fetched")
        assert fetch_audit[0]["actor_type"] == "agent"
        assert str(fetch_audit[0]["actor_id"]) == agent["id"]
        assert "broker-password-1" not in str(fetch_audit[0]["details"])

        pushed = await client.put("/api/v1/bridge/accounts/5550001/state",
                                  json=state(position(901)), headers=bridge)
        assert pushed.status == 204, await pushed.text()
        dealt = await client.post("/api/v1/bridge/accounts/5550001/deals",
                                  json={"deals": [deal(1), deal(2)]}, headers=bridge)
        assert await dealt.json() == {"inserted": 2, "duplicates": 0}

        trader = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Trader"])
        placed = await client.post(f"/api/v1/accounts/{account['id']}/orders", headers=trader.auth,
                                   json={"symbol": "EURUSD", "side": "buy", "type": "market",
                                         "volume": "0.10", "sl": "1.08000"})
        assert placed.status == 201, await placed.text()
        order = await placed.json()
        assert order["status"] == "pending"
        assert order["volume"] == "0.10"

        polled = await client.get("/api/v1/bridge/commands?wait=5", headers=bridge)
        commands = (await polled.json())["commands"]
        assert len(commands) == 1
        command = commands[0]
        assert command["account_login"] == 5550001
        assert command["type"] == "place_order"
        assert command["payload"]["order_id"] == order["id"]
        assert command["payload"]["volume"] == "0.10"
        sent = await (await client.get(f"/api/v1/orders/{order['id']}",
                                       headers=trader.auth)).json()
        assert sent["status"] == "sent"

        reported = await client.post(f"/api/v1/bridge/commands/{command['id']}/result",
                                     json={"status": "filled", "broker_ticket": 777001,
                                           "price": "1.08512"}, headers=bridge)
        assert reported.status == 204, await reported.text()
        again = await client.post(f"/api/v1/bridge/commands/{command['id']}/result",
                                  json={"status": "filled"}, headers=bridge)
        assert again.status == 409
        assert (await again.json())["code"] == "already_reported"

        done = await (await client.get(f"/api/v1/orders/{order['id']}",
                                       headers=trader.auth)).json()
        assert (done["status"], done["broker_ticket"], done["fill_price"]) == \
            ("filled", 777001, "1.08512")
        assert done["executed_at"] is not None
        executed = await audit_rows(owner_conn, admin.org_id, "order.executed")
        assert executed[0]["actor_type"] == "agent"
        positions = await (await client.get(f"/api/v1/accounts/{account['id']}/positions",
                                            headers=trader.auth)).json()
        assert [p["ticket"] for p in positions["items"]] == [901]
        seen_account = await (await client.get(f"/api/v1/accounts/{account['id']}",
                                               headers=trader.auth)).json()
        assert (seen_account["balance"], seen_account["currency"]) == ("10000.00", "USD")


class TestState:
    async def test_state_replaces_open_positions_atomically(self, client: Any,
                                                             mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        url = f"/api/v1/bridge/accounts/{account['login']}/state"
        listing = f"/api/v1/accounts/{account['id']}/positions"
        first = await client.put(url, json=state(position(1), position(2)), headers=agent_auth(key))
        assert first.status == 204
        second = await client.put(url, json=state(position(2, volume="0.20"), position(3)),
                                  headers=agent_auth(key))
        assert second.status == 204
        items = (await (await client.get(listing, headers=admin.auth)).json())["items"]
        assert sorted((p["ticket"], p["volume"]) for p in items) == [(2, "0.20"), (3, "0.10")]

        bad = await client.put(url, json=state(position(4), position(5, volume=0.1)),
                               headers=agent_auth(key))
        assert bad.status == 422
        assert "positions.1.volume" in (await bad.json())["errors"]
        items = (await (await client.get(listing, headers=admin.auth)).json())["items"]
        assert sorted(p["ticket"] for p in items) == [2, 3]
        emptied = await client.put(url, json=state(), headers=agent_auth(key))
        assert emptied.status == 204
        assert (await (await client.get(listing, headers=admin.auth)).json())["items"] == []


class TestDeals:
    async def test_deals_pushed_twice_count_as_duplicates(self, client: Any,
                                                          mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        url = f"/api/v1/bridge/accounts/{account['login']}/deals"
        batch = {"deals": [deal(t) for t in range(1, 501)]}
        first = await client.post(url, json=batch, headers=agent_auth(key))
        assert await first.json() == {"inserted": 500, "duplicates": 0}
        second = await client.post(url, json=batch, headers=agent_auth(key))
        assert await second.json() == {"inserted": 0, "duplicates": 500}
        mixed = await client.post(url, json={"deals": [deal(500), deal(501), deal(501)]},
                                  headers=agent_auth(key))
        assert await mixed.json() == {"inserted": 1, "duplicates": 2}

    async def test_deal_batches_are_validated_whole(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        url = f"/api/v1/bridge/accounts/{account['login']}/deals"
        too_many = await client.post(url, json={"deals": [deal(t) for t in range(1001)]},
                                     headers=agent_auth(key))
        assert too_many.status == 422
        cases = [
            ({"volume": 0.1}, "deals.0.volume"),
            ({"side": "short"}, "deals.0.side"),
            ({"executed_at": "2026-11-28T09:30:00"}, "deals.0.executed_at"),
            ({"ticket": True}, "deals.0.ticket"),
            ({"symbol": "EUR USD"}, "deals.0.symbol"),
            ({"leverage": 100}, "deals.0.leverage"),
        ]
        for override, field in cases:
            response = await client.post(url, json={"deals": [deal(1, **override)]},
                                         headers=agent_auth(key))
            assert response.status == 422, override
            assert field in (await response.json())["errors"], override
        unknown_top = await client.post(url, json={"deals": [], "extra": 1},
                                        headers=agent_auth(key))
        assert unknown_top.status == 422
        nothing = await client.get(f"/api/v1/accounts/{account['id']}/deals", headers=admin.auth)
        assert (await nothing.json())["items"] == []

    async def test_deals_read_with_filters_and_cursor(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        base = datetime(2026, 11, 2, tzinfo=UTC)
        deals = [deal(t, executed_at=(base + timedelta(hours=t)).isoformat(),
                      symbol="XAUUSD" if t % 2 else "EURUSD") for t in range(1, 11)]
        await client.post(f"/api/v1/bridge/accounts/{account['login']}/deals",
                          json={"deals": deals}, headers=agent_auth(key))
        url = f"/api/v1/accounts/{account['id']}/deals"
        page = await (await client.get(f"{url}?limit=4", headers=admin.auth)).json()
        assert [d["ticket"] for d in page["items"]] == [10, 9, 8, 7]
        rest = await (await client.get(f"{url}?limit=4&cursor={page['next_cursor']}",
                                       headers=admin.auth)).json()
        assert [d["ticket"] for d in rest["items"]] == [6, 5, 4, 3]
        window = await client.get(url, headers=admin.auth, params={
            "from": (base + timedelta(hours=3)).isoformat(),
            "to": (base + timedelta(hours=6)).isoformat(), "symbol": "XAUUSD"})
        assert [d["ticket"] for d in (await window.json())["items"]] == [5, 3]
        first = page["items"][0]
        assert (first["volume"], first["commission"], first["order_ticket"]) == \
            ("0.10", "-0.70", 100010)
        bad = await client.get(f"{url}?from=yesterday", headers=admin.auth)
        assert bad.status == 422


class TestCommands:
    async def test_two_concurrent_pollers_never_get_the_same_command(
            self, client: Any, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        """One poller on each of two service instances, sharing PostgreSQL and Redis."""
        other_instance = await aiohttp_client(create_app(config))
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        url = f"/api/v1/accounts/{account['id']}/orders"

        received: tuple[list[str], list[str]] = ([], [])

        async def poll(instance: Any, mine: list[str]) -> None:
            deadline = time.monotonic() + 20
            while sum(map(len, received)) < 30 and time.monotonic() < deadline:
                # Short polls, so that both instances keep asking while orders arrive
                # (a long poll lets whichever is woken first take every command).
                response = await instance.get("/api/v1/bridge/commands?wait=0",
                                              headers=agent_auth(key))
                mine += [c["id"] for c in (await response.json())["commands"]]
                await asyncio.sleep(0.005)

        async def place(count: int) -> None:
            for _ in range(count):
                response = await client.post(url, headers=admin.auth, json={
                    "symbol": "EURUSD", "side": "buy", "type": "market", "volume": "0.01"})
                assert response.status == 201
                await asyncio.sleep(0.01)

        await asyncio.gather(poll(client, received[0]), poll(other_instance, received[1]),
                             place(30))
        first, second = received
        assert first and second
        assert not set(first) & set(second)
        assert len(first) + len(second) == len(set(first + second)) == 30

    async def test_long_poll_wakes_promptly_when_an_order_arrives(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        await asyncio.wait_for(client.app[keys.BROADCAST].subscribed.wait(), 5)
        started = time.monotonic()
        poll = asyncio.create_task(client.get("/api/v1/bridge/commands?wait=20",
                                              headers=agent_auth(key)))
        await asyncio.sleep(0.3)
        assert not poll.done()
        placed = await client.post(f"/api/v1/accounts/{account['id']}/orders",
                                   headers=admin.auth, json={"symbol": "EURUSD", "side": "sell",
                                                             "type": "limit", "volume": "1",
                                                             "price": "1.1"})
        assert placed.status == 201
        response = await poll
        assert len((await response.json())["commands"]) == 1
        assert time.monotonic() - started < 2.0

    async def test_a_waiting_long_poll_holds_no_database_connection(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        # One connection: a poll that kept it while waiting would hold up every request.
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, db_pool_min=1, db_pool_max=1)))
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        polls = [asyncio.create_task(client.get("/api/v1/bridge/commands?wait=3",
                                                headers=agent_auth(key))) for _ in range(3)]
        await asyncio.sleep(0.5)  # each has claimed nothing and waits
        pool = client.app[keys.DB_POOL]
        assert pool.get_idle_size() == pool.get_size() == 1
        listed = await client.get("/api/v1/agents", headers=admin.auth)
        assert listed.status == 200
        assert not any(p.done() for p in polls)  # answered while every poll still waits
        for poll in polls:
            assert await (await poll).json() == {"commands": []}

    async def test_empty_poll_waits_then_answers_empty(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        started = time.monotonic()
        response = await client.get("/api/v1/bridge/commands?wait=1", headers=agent_auth(key))
        assert await response.json() == {"commands": []}
        assert 0.9 < time.monotonic() - started < 3
        too_long = await client.get("/api/v1/bridge/commands?wait=31", headers=agent_auth(key))
        assert too_long.status == 422

    async def test_result_for_a_command_of_another_agent_is_404(self, client: Any,
                                                                mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        _, other_key = await agent_with_key(client, admin, "Other")
        account = await trading_account(client, admin, agent_id=agent["id"])
        await client.post(f"/api/v1/accounts/{account['id']}/orders", headers=admin.auth,
                          json={"symbol": "EURUSD", "side": "buy", "type": "market",
                                "volume": "1"})
        command = (await (await client.get("/api/v1/bridge/commands",
                                           headers=agent_auth(key))).json())["commands"][0]
        stolen = await client.post(f"/api/v1/bridge/commands/{command['id']}/result",
                                   json={"status": "filled"}, headers=agent_auth(other_key))
        assert stolen.status == 404
        nothing = await client.get("/api/v1/bridge/commands", headers=agent_auth(other_key))
        assert (await nothing.json())["commands"] == []


class TestAgentScope:
    async def test_agent_sees_only_its_accounts_and_other_orgs_are_404(
            self, client: Any, mail_sink: Any) -> None:
        org_a = await signed_up(client, mail_sink, "Org A")
        org_b = await signed_up(client, mail_sink, "Org B")
        agent_a, key_a = await agent_with_key(client, org_a)
        agent_b, _ = await agent_with_key(client, org_b)
        await trading_account(client, org_a, agent_id=agent_a["id"], login=424201)
        unassigned = await trading_account(client, org_a, login=424202)
        b_account = await trading_account(client, org_b, agent_id=agent_b["id"], login=424203)
        listed = await (await client.get("/api/v1/bridge/accounts",
                                         headers=agent_auth(key_a))).json()
        assert [a["login"] for a in listed["items"]] == [424201]
        for login in (unassigned["login"], b_account["login"], 999):
            state_push = await client.put(f"/api/v1/bridge/accounts/{login}/state",
                                          json=state(position(1)), headers=agent_auth(key_a))
            assert state_push.status == 404
            deals = await client.post(f"/api/v1/bridge/accounts/{login}/deals",
                                      json={"deals": [deal(1)]}, headers=agent_auth(key_a))
            assert deals.status == 404
        b_deals = await client.get(f"/api/v1/accounts/{b_account['id']}/deals",
                                   headers=org_b.auth)
        assert (await b_deals.json())["items"] == []
        not_a_login = await client.put("/api/v1/bridge/accounts/abc/state", json=state(),
                                       headers=agent_auth(key_a))
        assert not_a_login.status == 404

    async def test_bridge_refuses_people_and_people_routes_refuse_agents(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        as_person = await client.post("/api/v1/bridge/heartbeat", json={"version": "1"},
                                      headers=admin.auth)
        assert as_person.status == 401
        as_agent = await client.get("/api/v1/accounts", headers=agent_auth(key))
        assert as_agent.status == 401
        nobody = await client.get("/api/v1/bridge/accounts")
        assert nobody.status == 401
        assert (await nobody.json())["code"] == "invalid_api_key"

    async def test_the_bridge_gate_is_loaded_again_after_a_script_flush(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        # Its own client address (loopback a trusted proxy): the window it is counted in
        # is this test's alone, not shared with every other test's bridge traffic.
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))))
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        headers = {**agent_auth(key), "X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}"}
        first = await client.post("/api/v1/bridge/heartbeat", json={"version": "1"},
                                  headers=headers)
        await client.app[keys.REDIS].script_flush()
        second = await client.post("/api/v1/bridge/heartbeat", json={"version": "1"},
                                   headers=headers)
        assert (first.status, second.status) == (200, 200)
        # Counted in Redis's window, not afresh in memory (which would show more left).
        assert int(second.headers["RateLimit-Remaining"]) < \
            int(first.headers["RateLimit-Remaining"])
