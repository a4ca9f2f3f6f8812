"""Strategies: CRUD, bounded parameters, accounts of the org only."""

from __future__ import annotations

from typing import Any

from tests.factories import member_with_roles, signed_up, trading_account


class TestStrategies:
    async def test_create_read_update_delete(self, client: Any, mail_sink: Any,
                                             owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        account = await trading_account(client, admin)
        strategist = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                             ["Strategist"])
        created = await client.post("/api/v1/strategies", headers=strategist.auth, json={
            "name": "Mean reversion", "description": "EURUSD 5m",
            "account_ids": [account["id"]],
            "parameters": {"lookback": 20, "bands": [1.5, 2.0], "filters": {"atr": True}}})
        assert created.status == 201, await created.text()
        body = await created.json()
        assert (body["account_ids"], body["enabled"]) == ([account["id"]], False)
        url = f"/api/v1/strategies/{body['id']}"
        assert await (await client.get(url, headers=admin.auth)).json() == body
        patched = await client.patch(url, headers=strategist.auth,
                                     json={"enabled": True, "account_ids": []})
        assert (await patched.json())["enabled"] is True
        assert (await patched.json())["account_ids"] == []
        listed = await (await client.get("/api/v1/strategies", headers=admin.auth)).json()
        assert [s["id"] for s in listed["items"]] == [body["id"]]
        duplicate = await client.post("/api/v1/strategies", headers=strategist.auth,
                                      json={"name": "Mean reversion"})
        assert duplicate.status == 409
        assert (await client.delete(url, headers=strategist.auth)).status == 204
        assert (await client.get(url, headers=admin.auth)).status == 404
        actions = [r["action"] for r in await owner_conn.fetch(
            "select action from audit_log where resource_id = $1 order by occurred_at",
            body["id"])]
        assert actions == ["strategy.created", "strategy.updated", "strategy.deleted"]

    async def test_parameters_are_a_bounded_object(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        nested: dict[str, Any] = {}
        deepest = nested
        for _ in range(12):
            deepest["x"] = {}
            deepest = deepest["x"]
        for parameters in ([1, 2], "text", {"blob": "x" * 20000}, nested):
            response = await client.post("/api/v1/strategies", headers=admin.auth,
                                         json={"name": "S", "parameters": parameters})
            assert response.status == 422, str(parameters)[:40]
            assert "parameters" in (await response.json())["errors"]

    async def test_accounts_of_another_org_are_refused(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        other = await signed_up(client, mail_sink)
        foreign = await trading_account(client, other)
        response = await client.post("/api/v1/strategies", headers=admin.auth,
                                     json={"name": "S", "account_ids": [foreign["id"]]})
        assert response.status == 422
        assert "account_ids" in (await response.json())["errors"]

    async def test_viewer_and_trader_cannot_change_strategies(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        trader = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Trader"])
        assert (await client.get("/api/v1/strategies", headers=trader.auth)).status == 200
        refused = await client.post("/api/v1/strategies", headers=trader.auth,
                                    json={"name": "S"})
        assert refused.status == 403

    async def test_deleting_an_account_detaches_it(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        account = await trading_account(client, admin)
        created = await (await client.post("/api/v1/strategies", headers=admin.auth, json={
            "name": "S", "account_ids": [account["id"]]})).json()
        await client.delete(f"/api/v1/accounts/{account['id']}", headers=admin.auth)
        after = await (await client.get(f"/api/v1/strategies/{created['id']}",
                                        headers=admin.auth)).json()
        assert after["account_ids"] == []
