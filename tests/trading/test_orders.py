"""Orders: validation, idempotent retries, risk limits, cancel, closing positions."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.bridge.test_routes import deal, position, state
from tests.factories import (
    Session,
    agent_auth,
    agent_with_key,
    member_with_roles,
    signed_up,
    trading_account,
)

MARKET = {"symbol": "EURUSD", "side": "buy", "type": "market", "volume": "0.10"}


async def desk(client: Any, mail_sink: Any) -> tuple[Session, dict[str, Any], str]:
    """An org administrator, an account assigned to an agent, and the agent's key."""
    admin = await signed_up(client, mail_sink)
    agent, key = await agent_with_key(client, admin)
    account = await trading_account(client, admin, agent_id=agent["id"])
    return admin, account, key


async def place(client: Any, session: Session, account: dict[str, Any], **body: Any) -> Any:
    return await client.post(f"/api/v1/accounts/{account['id']}/orders",
                             json={**MARKET, **body}, headers=session.auth)


class TestPlacing:
    async def test_orders_are_validated(self, client: Any, mail_sink: Any) -> None:
        admin, account, _ = await desk(client, mail_sink)
        cases = [({"volume": "0"}, "volume"), ({"volume": 0.1}, "volume"),
                 ({"volume": "-1"}, "volume"), ({"volume": "1e3"}, "volume"),
                 ({"volume": "NaN"}, "volume"), ({"type": "limit"}, "price"),
                 ({"type": "stop", "price": None}, "price"), ({"price": "1.1"}, "price"),
                 ({"symbol": "EUR/USD"}, "symbol"), ({"symbol": ""}, "symbol"),
                 ({"side": "long"}, "side"), ({"type": "fok"}, "type"),
                 ({"sl": "0"}, "sl"), ({"client_order_id": "a b"}, "client_order_id"),
                 ({"leverage": 10}, "leverage")]
        for change, field in cases:
            response = await place(client, admin, account, **change)
            assert response.status == 422, change
            assert field in (await response.json())["errors"], change
        limit = await place(client, admin, account, type="limit", price="1.07500",
                            sl="1.07000", tp="1.09000")
        assert limit.status == 201
        body = await limit.json()
        assert (body["type"], body["price"], body["sl"], body["tp"]) == \
            ("limit", "1.07500", "1.07000", "1.09000")

    async def test_a_retry_with_the_same_client_order_id_returns_the_first_order(
            self, client: Any, mail_sink: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        first = await place(client, admin, account, client_order_id="retry-1")
        assert first.status == 201
        again = await place(client, admin, account, client_order_id="retry-1")
        assert again.status == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert (await again.json())["id"] == (await first.json())["id"]
        different = await place(client, admin, account, client_order_id="retry-1",
                                volume="0.20")
        assert different.status == 409
        await client.patch(f"/api/v1/accounts/{account['id']}", json={"agent_id": None},
                           headers=admin.auth)
        late_retry = await place(client, admin, account, client_order_id="retry-1")
        assert late_retry.status == 200  # the first order, although no agent would take a new one
        commands = await (await client.get("/api/v1/bridge/commands",
                                           headers=agent_auth(key))).json()
        assert commands["commands"] == []  # unassigned: the agent no longer sees the account
        orders = await (await client.get("/api/v1/orders", headers=admin.auth)).json()
        assert len(orders["items"]) == 1

    async def test_concurrent_retries_with_one_client_order_id_make_one_order(
            self, client: Any, mail_sink: Any) -> None:
        admin, account, _ = await desk(client, mail_sink)
        answers = await asyncio.gather(*(place(client, admin, account, client_order_id="race-1")
                                         for _ in range(10)))
        statuses = sorted(a.status for a in answers)
        assert statuses == [200] * 9 + [201]
        assert len({(await a.json())["id"] for a in answers}) == 1
        orders = await (await client.get("/api/v1/orders", headers=admin.auth)).json()
        assert len(orders["items"]) == 1

    async def test_viewer_order_is_refused(self, client: Any, mail_sink: Any,
                                           owner_conn: Any) -> None:
        admin, account, _ = await desk(client, mail_sink)
        viewer = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])
        refused = await place(client, viewer, account)
        assert refused.status == 403
        orders = await (await client.get("/api/v1/orders", headers=viewer.auth)).json()
        assert orders["items"] == []

    async def test_an_account_without_agent_takes_no_order(self, client: Any,
                                                           mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        account = await trading_account(client, admin)
        refused = await place(client, admin, account)
        assert refused.status == 409
        assert (await refused.json())["code"] == "no_agent"

    async def test_orders_are_listed_with_filters(self, client: Any, mail_sink: Any) -> None:
        admin, account, _ = await desk(client, mail_sink)
        placed = [await (await place(client, admin, account)).json() for _ in range(3)]
        await client.post(f"/api/v1/orders/{placed[0]['id']}/cancel", headers=admin.auth)
        page = await (await client.get("/api/v1/orders?limit=2", headers=admin.auth)).json()
        assert [o["id"] for o in page["items"]] == [placed[2]["id"], placed[1]["id"]]
        rest = await (await client.get(f"/api/v1/orders?limit=2&cursor={page['next_cursor']}",
                                       headers=admin.auth)).json()
        assert [o["id"] for o in rest["items"]] == [placed[0]["id"]]
        cancelled = await (await client.get(
            f"/api/v1/orders?status=cancelled&account_id={account['id']}",
            headers=admin.auth)).json()
        assert [o["id"] for o in cancelled["items"]] == [placed[0]["id"]]
        assert (await client.get("/api/v1/orders?status=lost", headers=admin.auth)).status == 422


class TestRiskLimits:
    async def set_limits(self, client: Any, admin: Session, account: dict[str, Any],
                         **limits: Any) -> None:
        body = {"trading_enabled": True, "max_order_volume": None, "max_open_positions": None,
                "max_daily_loss": None, **limits}
        response = await client.put(f"/api/v1/accounts/{account['id']}/risk-limits",
                                    json=body, headers=admin.auth)
        assert response.status == 200, await response.text()

    async def assert_breach(self, client: Any, owner_conn: Any, response: Any,
                            limit: str) -> None:
        assert response.status == 422
        body = await response.json()
        assert body["code"] == "risk_limit_exceeded"
        assert limit in body["errors"]
        entry = await owner_conn.fetchrow(
            "select details from audit_log where action = 'order.rejected' "
            "and request_id = $1", body["request_id"])
        assert entry is not None, "the refusal must be audited although the request failed"
        assert json.loads(entry["details"])["limit"] == limit

    async def test_trading_disabled(self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        await self.set_limits(client, admin, account, trading_enabled=False)
        await self.assert_breach(client, owner_conn, await place(client, admin, account),
                                 "trading_enabled")
        commands = await (await client.get("/api/v1/bridge/commands",
                                           headers=agent_auth(key))).json()
        assert commands["commands"] == []

    async def test_max_order_volume(self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin, account, _ = await desk(client, mail_sink)
        await self.set_limits(client, admin, account, max_order_volume="1.00")
        assert (await place(client, admin, account, volume="1.00")).status == 201
        await self.assert_breach(client, owner_conn,
                                 await place(client, admin, account, volume="1.01"),
                                 "max_order_volume")

    async def test_max_open_positions_counts_positions_and_orders_in_flight(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        await client.put(f"/api/v1/bridge/accounts/{account['login']}/state",
                         json=state(position(1)), headers=agent_auth(key))
        await self.set_limits(client, admin, account, max_open_positions=2)
        assert (await place(client, admin, account)).status == 201
        await self.assert_breach(client, owner_conn, await place(client, admin, account),
                                 "max_open_positions")

    async def test_max_daily_loss_from_todays_deals(self, client: Any, mail_sink: Any,
                                                    owner_conn: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        yesterday = (datetime.now(UTC) - timedelta(days=1, hours=1)).isoformat()
        await client.post(f"/api/v1/bridge/accounts/{account['login']}/deals", json={"deals": [
            deal(1, profit="-900", commission="0", executed_at=yesterday),
            deal(2, profit="-80", commission="-10", swap="-5"),
        ]}, headers=agent_auth(key))
        await self.set_limits(client, admin, account, max_daily_loss="100")
        assert (await place(client, admin, account)).status == 201
        await client.post(f"/api/v1/bridge/accounts/{account['login']}/deals", json={"deals": [
            deal(3, profit="-5", commission="0")]}, headers=agent_auth(key))
        await self.assert_breach(client, owner_conn, await place(client, admin, account),
                                 "max_daily_loss")


class TestCancelAndClose:
    async def test_cancel_while_pending_then_409_once_the_agent_has_it(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        trader = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Trader"])
        first = await (await place(client, trader, account)).json()
        cancelled = await client.post(f"/api/v1/orders/{first['id']}/cancel", headers=trader.auth)
        assert cancelled.status == 200
        assert (await cancelled.json())["status"] == "cancelled"
        again = await client.post(f"/api/v1/orders/{first['id']}/cancel", headers=trader.auth)
        assert again.status == 409
        second = await (await place(client, trader, account)).json()
        commands = (await (await client.get("/api/v1/bridge/commands",
                                            headers=agent_auth(key))).json())["commands"]
        assert [c["payload"]["order_id"] for c in commands] == [second["id"]]
        late = await client.post(f"/api/v1/orders/{second['id']}/cancel", headers=trader.auth)
        assert late.status == 409
        assert (await late.json())["code"] == "order_not_pending"
        audit = await owner_conn.fetch("select action from audit_log where resource_id = $1",
                                       first["id"])
        assert sorted(a["action"] for a in audit) == ["order.cancelled", "order.created"]

    async def test_close_a_position_by_ticket(self, client: Any, mail_sink: Any) -> None:
        admin, account, key = await desk(client, mail_sink)
        await client.put(f"/api/v1/bridge/accounts/{account['login']}/state",
                         json=state(position(4242, side="sell", volume="0.30", symbol="XAUUSD")),
                         headers=agent_auth(key))
        await client.put(f"/api/v1/accounts/{account['id']}/risk-limits", headers=admin.auth,
                         json={"trading_enabled": False, "max_order_volume": "0.01",
                               "max_open_positions": 0, "max_daily_loss": None})
        url = f"/api/v1/accounts/{account['id']}/positions/4242/close"
        closed = await client.post(url, headers=admin.auth)
        assert closed.status == 201, await closed.text()
        order = await closed.json()
        assert (order["symbol"], order["side"], order["volume"], order["position_ticket"]) == \
            ("XAUUSD", "buy", "0.30", 4242)
        twice = await client.post(url, headers=admin.auth)
        assert twice.status == 409
        missing = await client.post(f"/api/v1/accounts/{account['id']}/positions/1/close",
                                    headers=admin.auth)
        assert missing.status == 404
        commands = (await (await client.get("/api/v1/bridge/commands",
                                            headers=agent_auth(key))).json())["commands"]
        assert [(c["type"], c["payload"]["ticket"]) for c in commands] == \
            [("close_position", 4242)]
