"""Accounts: CRUD, write-only encrypted credentials, risk limits."""

from __future__ import annotations

import json
from typing import Any

from archomata import keys
from archomata.crypto import key_id
from tests.factories import (
    agent_auth,
    agent_with_key,
    member_with_roles,
    signed_up,
    trading_account,
)


class TestAccounts:
    async def test_create_read_update_delete(self, client: Any, mail_sink: Any,
                                             owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        created = await trading_account(client, admin, login=7001, name="Primary")
        assert created["agent_id"] is None
        assert created["has_credentials"] is False
        assert created["balance"] is None
        url = f"/api/v1/accounts/{created['id']}"
        got = await (await client.get(url, headers=admin.auth)).json()
        assert got == created

        patched = await client.patch(url, headers=admin.auth, json={
            "name": "Renamed", "agent_id": agent["id"], "environment": "live"})
        assert patched.status == 200, await patched.text()
        body = await patched.json()
        assert (body["name"], body["agent_id"], body["environment"]) == \
            ("Renamed", agent["id"], "live")
        listed = await (await client.get("/api/v1/accounts", headers=admin.auth)).json()
        assert [a["id"] for a in listed["items"]] == [created["id"]]

        assert (await client.patch(url, headers=admin.auth, json={})).status == 422
        assert (await client.patch(url, headers=admin.auth,
                                   json={"org_id": str(admin.org_id)})).status == 422
        deleted = await client.delete(url, headers=admin.auth)
        assert deleted.status == 204
        assert (await client.get(url, headers=admin.auth)).status == 404
        assert (await client.delete(url, headers=admin.auth)).status == 404
        actions = [r["action"] for r in await owner_conn.fetch(
            "select action from audit_log where resource_id = $1 order by occurred_at",
            created["id"])]
        assert actions == ["account.created", "account.updated", "account.deleted"]

    async def test_validation(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        other = await signed_up(client, mail_sink)
        foreign_agent, _ = await agent_with_key(client, other)
        base = {"name": "A", "broker": "B", "server": "S", "login": 1, "environment": "demo"}
        cases = [({"login": "123"}, "login"), ({"login": 0}, "login"),
                 ({"environment": "paper"}, "environment"), ({"extra": 1}, "extra"),
                 ({"agent_id": foreign_agent["id"]}, "agent_id"),
                 ({"credentials": {"password": ""}}, "credentials.password")]
        for change, field in cases:
            response = await client.post("/api/v1/accounts", json={**base, **change},
                                         headers=admin.auth)
            assert response.status == 422, change
            assert field in (await response.json())["errors"], change

    async def test_one_agent_cannot_hold_two_accounts_with_one_login(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        await trading_account(client, admin, agent_id=agent["id"], login=8080)
        twin = await client.post("/api/v1/accounts", headers=admin.auth, json={
            "name": "Twin", "broker": "B", "server": "Other", "login": 8080,
            "environment": "demo", "agent_id": agent["id"]})
        assert twin.status == 409
        assert (await twin.json())["code"] == "login_taken"

    async def test_viewer_reads_but_cannot_write(self, client: Any, mail_sink: Any,
                                                 owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        account = await trading_account(client, admin)
        viewer = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])
        url = f"/api/v1/accounts/{account['id']}"
        assert (await client.get(url, headers=viewer.auth)).status == 200
        assert (await client.patch(url, json={"name": "x"}, headers=viewer.auth)).status == 403
        assert (await client.delete(url, headers=viewer.auth)).status == 403
        assert (await client.put(f"{url}/risk-limits", headers=viewer.auth, json={
            "trading_enabled": False, "max_order_volume": None, "max_open_positions": None,
            "max_daily_loss": None})).status == 403


class TestCredentials:
    async def test_credentials_are_write_only_and_sealed_with_the_data_key(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"],
                                        password="very-secret-broker-pw")
        assert account["has_credentials"] is True
        assert "very-secret" not in str(account)
        blob = await owner_conn.fetchval("select credentials from accounts where id = $1::uuid",
                                         account["id"])
        assert b"very-secret" not in blob
        data_key = client.app[keys.CONFIG].data_key.reveal()
        assert blob[1:5].hex() == key_id(data_key)
        audit = await owner_conn.fetch("select details::text as d from audit_log "
                                       "where org_id = $1", admin.org_id)
        assert all("very-secret" not in a["d"] for a in audit)

        url = f"/api/v1/accounts/{account['id']}"
        changed = await client.patch(url, json={"credentials": {"password": "second-pw"}},
                                     headers=admin.auth)
        assert (await changed.json())["has_credentials"] is True
        fetched = await (await client.get("/api/v1/bridge/accounts",
                                          headers=agent_auth(key))).json()
        assert fetched["items"][0]["credentials"] == {"password": "second-pw"}
        cleared = await client.patch(url, json={"credentials": None}, headers=admin.auth)
        assert (await cleared.json())["has_credentials"] is False
        fetched = await (await client.get("/api/v1/bridge/accounts",
                                          headers=agent_auth(key))).json()
        assert fetched["items"][0]["credentials"] is None

    async def test_a_blob_moved_to_another_account_does_not_open(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        first = await trading_account(client, admin, agent_id=agent["id"], password="pw-one")
        second = await trading_account(client, admin, agent_id=agent["id"], password="pw-two")
        await owner_conn.execute(
            "update accounts set credentials = (select credentials from accounts "
            "where id = $1::uuid) where id = $2::uuid", first["id"], second["id"])
        fetched = await client.get("/api/v1/bridge/accounts", headers=agent_auth(key))
        body = await fetched.text()
        # 503 problem+json, as any stored secret that does not open (archomata.sealed).
        assert fetched.status == 503 and '"secret_unavailable"' in body
        assert "pw-one" not in body and "pw-two" not in body


class TestRiskLimits:
    async def test_new_accounts_trade_without_limits_and_limits_can_be_set(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        account = await trading_account(client, admin)
        url = f"/api/v1/accounts/{account['id']}/risk-limits"
        assert await (await client.get(url, headers=admin.auth)).json() == {
            "trading_enabled": True, "max_order_volume": None, "max_open_positions": None,
            "max_daily_loss": None}
        limits = {"trading_enabled": True, "max_order_volume": "2.50",
                  "max_open_positions": 3, "max_daily_loss": "500"}
        risk = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                       ["Risk Manager"])
        put = await client.put(url, json=limits, headers=risk.auth)
        assert put.status == 200, await put.text()
        assert await put.json() == limits
        assert await (await client.get(url, headers=admin.auth)).json() == limits
        partial = await client.put(url, json={"trading_enabled": False}, headers=risk.auth)
        assert partial.status == 422
        for bad in ({"max_order_volume": "0"}, {"max_order_volume": 1.5},
                    {"max_open_positions": -1}, {"max_daily_loss": "-1"}):
            response = await client.put(url, json={**limits, **bad}, headers=risk.auth)
            assert response.status == 422, bad
        entry = await owner_conn.fetchrow(
            "select actor_id, details from audit_log where action = 'risk_limits.updated' "
            "and resource_id = $1", account["id"])
        assert entry["actor_id"] == risk.user_id
        assert json.loads(entry["details"])["to"]["max_order_volume"] == "2.50"
