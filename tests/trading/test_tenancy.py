"""Every trading route, called by org A with org B's ids, answers 404 and changes nothing."""

from __future__ import annotations

from typing import Any

from tests.bridge.test_routes import position, state
from tests.factories import agent_auth, agent_with_key, signed_up, trading_account

SNAPSHOT = """
    select
      (select json_agg(a order by a.id) from (select id, name, agent_id, credentials,
              trading_enabled, max_order_volume, deleted_at from accounts where org_id = $1) a),
      (select json_agg(g order by g.id) from (select id, name, key_id, key_hash
              from agents where org_id = $1) g),
      (select json_agg(o order by o.id) from (select id, status from orders
              where org_id = $1) o),
      (select json_agg(s order by s.id) from (select id, name, enabled from strategies
              where org_id = $1) s),
      (select count(*) from positions where org_id = $1)
"""


class TestCrossTenant:
    async def test_org_a_with_org_b_ids_gets_404_and_changes_nothing(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        org_a = await signed_up(client, mail_sink, "Org A")
        org_b = await signed_up(client, mail_sink, "Org B")
        agent_b, key_b = await agent_with_key(client, org_b)
        account_b = await trading_account(client, org_b, agent_id=agent_b["id"],
                                          password="b-secret")
        await client.put(f"/api/v1/bridge/accounts/{account_b['login']}/state",
                         json=state(position(77)), headers=agent_auth(key_b))
        order_b = await (await client.post(
            f"/api/v1/accounts/{account_b['id']}/orders", headers=org_b.auth,
            json={"symbol": "EURUSD", "side": "buy", "type": "market", "volume": "1"})).json()
        strategy_b = await (await client.post("/api/v1/strategies", headers=org_b.auth,
                                              json={"name": "B"})).json()
        command_b = (await (await client.get("/api/v1/bridge/commands",
                                             headers=agent_auth(key_b))).json())["commands"][0]
        _, key_a = await agent_with_key(client, org_a)
        before = await owner_conn.fetchrow(SNAPSHOT, org_b.org_id)

        account, agent = f"/api/v1/accounts/{account_b['id']}", f"/api/v1/agents/{agent_b['id']}"
        limits = {"trading_enabled": False, "max_order_volume": None,
                  "max_open_positions": None, "max_daily_loss": None}
        calls = [
            ("GET", account, None), ("PATCH", account, {"name": "x"}), ("DELETE", account, None),
            ("GET", f"{account}/positions", None), ("GET", f"{account}/deals", None),
            ("GET", f"{account}/risk-limits", None), ("PUT", f"{account}/risk-limits", limits),
            ("POST", f"{account}/orders", {"symbol": "EURUSD", "side": "buy",
                                           "type": "market", "volume": "1"}),
            ("POST", f"{account}/positions/77/close", None),
            ("GET", f"/api/v1/orders/{order_b['id']}", None),
            ("POST", f"/api/v1/orders/{order_b['id']}/cancel", None),
            ("GET", agent, None), ("POST", f"{agent}/rotate-key", None), ("DELETE", agent, None),
            ("GET", f"/api/v1/strategies/{strategy_b['id']}", None),
            ("PATCH", f"/api/v1/strategies/{strategy_b['id']}", {"enabled": True}),
            ("DELETE", f"/api/v1/strategies/{strategy_b['id']}", None),
        ]
        for method, path, body in calls:
            response = await client.request(method, path, json=body, headers=org_a.auth)
            assert response.status == 404, (method, path, response.status)
        reported = await client.post(f"/api/v1/bridge/commands/{command_b['id']}/result",
                                     json={"status": "filled"}, headers=agent_auth(key_a))
        assert reported.status == 404
        for path in ("/api/v1/accounts", "/api/v1/orders", "/api/v1/strategies",
                     f"/api/v1/orders?account_id={account_b['id']}"):
            listed = await (await client.get(path, headers=org_a.auth)).json()
            assert listed["items"] == [], path
        agents_a = await (await client.get("/api/v1/agents", headers=org_a.auth)).json()
        assert agent_b["id"] not in [a["id"] for a in agents_a["items"]]
        assert await owner_conn.fetchrow(SNAPSHOT, org_b.org_id) == before

    async def test_ids_that_are_not_ids_are_404(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for path in ("/api/v1/accounts/1", "/api/v1/orders/x", "/api/v1/agents/0",
                     "/api/v1/strategies/abc"):
            assert (await client.get(path, headers=admin.auth)).status == 404
        account = await trading_account(client, admin)
        close = await client.post(f"/api/v1/accounts/{account['id']}/positions/-1/close",
                                  headers=admin.auth)
        assert close.status == 404
