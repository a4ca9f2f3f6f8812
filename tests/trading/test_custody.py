"""Who may put broker credentials within reach of an agent key (archomata.trading.custody): the
org administrator, on every way in; a Developer or Operations member gets 403
`permission_denied` and changes nothing, whatever agents:update / accounts:update allow."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

import pytest

from tests.factories import (
    Session,
    agent_auth,
    agent_with_key,
    member_with_roles,
    signed_up,
    trading_account,
)
from tests.identity.test_mfa import code, enrol

HEARTBEAT = "/api/v1/bridge/heartbeat"
ACCOUNT = {"name": "Live", "broker": "Broker Ltd", "server": "Broker-Live",
           "environment": "live"}
# The Administrator role holds every permission but is not the org role administrator.
ROLES = ["Developer", "Operations", "Administrator"]
WRITERS = ["Operations", "Administrator"]

AGENT_ROW = "select key_id, key_hash from agents where id = $1::uuid"
ACCOUNT_ROW = "select agent_id::text, credentials from accounts where id = $1::uuid"


async def staff(client: Any, mail_sink: Any, owner_conn: Any, admin: Session,
                role: str) -> Session:
    return await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [role])


async def assert_refused(response: Any) -> None:
    assert response.status == 403, await response.text()
    body = await response.json()
    assert body["code"] == "permission_denied"
    assert "password" not in json.dumps(body)


async def fetched_credentials(client: Any, key: str) -> list[Any]:
    listed = await client.get("/api/v1/bridge/accounts", headers=agent_auth(key))
    assert listed.status == 200, await listed.text()
    return [a["credentials"] for a in (await listed.json())["items"]]


class TestRotation:
    @pytest.mark.parametrize("role", ROLES)
    async def test_a_non_administrator_cannot_rotate_an_agent_serving_credentials(
            self, client: Any, mail_sink: Any, owner_conn: Any, role: str) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        await trading_account(client, admin, agent_id=agent["id"], password="mt5-pw-rot")
        member = await staff(client, mail_sink, owner_conn, admin, role)
        before = await owner_conn.fetchrow(AGENT_ROW, agent["id"])

        refused = await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                    headers=member.auth)
        await assert_refused(refused)
        assert await owner_conn.fetchrow(AGENT_ROW, agent["id"]) == before
        assert (await client.post(HEARTBEAT, json={"version": "1"},
                                  headers=agent_auth(key))).status == 200
        assert await owner_conn.fetchval(
            "select count(*) from audit_log where org_id = $1 and action = 'agent.key_rotated'",
            admin.org_id) == 0

    async def test_the_administrator_rotates_and_the_entry_names_them(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin, "Desk")
        await trading_account(client, admin, agent_id=agent["id"], password="mt5-pw-admin")
        rotated = await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                    headers=admin.auth)
        assert rotated.status == 200, await rotated.text()
        new_key = (await rotated.json())["api_key"]
        assert await fetched_credentials(client, new_key) == [{"password": "mt5-pw-admin"}]
        assert (await client.post(HEARTBEAT, json={"version": "1"},
                                  headers=agent_auth(key))).status == 401
        entry = await owner_conn.fetchrow(
            "select actor_type, actor_id, resource_id, details from audit_log "
            "where org_id = $1 and action = 'agent.key_rotated'", admin.org_id)
        assert (entry["actor_type"], entry["actor_id"], entry["resource_id"]) == \
            ("user", admin.user_id, agent["id"])
        details = json.loads(entry["details"])
        assert details == {"name": "Desk", "rotated_by": str(admin.user_id),
                           "sensitive_accounts": 1}
        # The secret may itself hold "_" (urlsafe base64): everything after the key id.
        assert new_key.split("_", 2)[2] not in entry["details"]

    async def test_a_developer_rotates_an_agent_without_credentials_and_is_named(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        await trading_account(client, admin, agent_id=agent["id"])  # no credentials
        await trading_account(client, admin, password="unassigned-pw")  # no agent
        developer = await staff(client, mail_sink, owner_conn, admin, "Developer")
        rotated = await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                    headers=developer.auth)
        assert rotated.status == 200, await rotated.text()
        assert await fetched_credentials(client, (await rotated.json())["api_key"]) == [None]
        entry = await owner_conn.fetchrow(
            "select actor_type, actor_id, details from audit_log "
            "where org_id = $1 and action = 'agent.key_rotated'", admin.org_id)
        assert (entry["actor_type"], entry["actor_id"]) == ("user", developer.user_id)
        assert json.loads(entry["details"])["rotated_by"] == str(developer.user_id)

    async def test_an_administrator_demoted_meanwhile_is_refused(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        """The role is read in the rotating transaction, not from the token's cache."""
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        await trading_account(client, admin, agent_id=agent["id"], password="mt5-pw-dem")
        second = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                         ["Administrator"], org_role="administrator")
        # The token's role is now cached as administrator; the demotion below, written
        # behind the service's back, leaves that cache stale.
        assert (await client.get("/api/v1/org", headers=second.auth)).status == 200
        await owner_conn.execute("update memberships set org_role = 'member' "
                                 "where org_id = $1 and user_id = $2",
                                 admin.org_id, second.user_id)
        before = await owner_conn.fetchrow(AGENT_ROW, agent["id"])
        await assert_refused(await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                               headers=second.auth))
        assert await owner_conn.fetchrow(AGENT_ROW, agent["id"]) == before


class TestAssignment:
    @pytest.mark.parametrize("role", WRITERS)
    async def test_create_with_agent_and_credentials_needs_the_administrator(
            self, client: Any, mail_sink: Any, owner_conn: Any, role: str) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        member = await staff(client, mail_sink, owner_conn, admin, role)
        body = {**ACCOUNT, "login": 6100001, "agent_id": agent["id"],
                "credentials": {"password": "mt5-pw-create"}}
        await assert_refused(await client.post("/api/v1/accounts", json=body,
                                               headers=member.auth))
        assert await owner_conn.fetchval("select count(*) from accounts where org_id = $1",
                                         admin.org_id) == 0
        # Either half alone puts nothing within reach: allowed.
        alone = [{**ACCOUNT, "login": 6100002, "agent_id": agent["id"]},
                 {**ACCOUNT, "login": 6100003, "credentials": {"password": "mt5-pw-alone"}}]
        for allowed in alone:
            created = await client.post("/api/v1/accounts", json=allowed, headers=member.auth)
            assert created.status == 201, await created.text()
        assert await fetched_credentials(client, key) == [None]
        done = await client.post("/api/v1/accounts", json=body, headers=admin.auth)
        assert done.status == 201, await done.text()
        assert await fetched_credentials(client, key) == [{"password": "mt5-pw-create"}, None]

    @pytest.mark.parametrize("role", WRITERS)
    async def test_pointing_a_credentialed_account_at_an_agent_needs_the_administrator(
            self, client: Any, mail_sink: Any, owner_conn: Any, role: str) -> None:
        admin = await signed_up(client, mail_sink)
        operations = await staff(client, mail_sink, owner_conn, admin, role)
        serving, _ = await agent_with_key(client, admin, "Serving")
        own, own_key = await agent_with_key(client, operations, "Operations' own")
        moved = await trading_account(client, admin, agent_id=serving["id"],
                                      password="mt5-pw-move")
        unassigned = await trading_account(client, admin, password="mt5-pw-lone")
        for account in (moved, unassigned):
            url = f"/api/v1/accounts/{account['id']}"
            before = await owner_conn.fetchrow(ACCOUNT_ROW, account["id"])
            await assert_refused(await client.patch(url, json={"agent_id": own["id"]},
                                                    headers=operations.auth))
            assert await owner_conn.fetchrow(ACCOUNT_ROW, account["id"]) == before
        assert await fetched_credentials(client, own_key) == []
        # What takes credentials out of reach, or touches nothing of them, stays open.
        url = f"/api/v1/accounts/{moved['id']}"
        renamed = await client.patch(url, json={"name": "Renamed"}, headers=operations.auth)
        assert renamed.status == 200, await renamed.text()
        same = await client.patch(url, json={"agent_id": serving["id"]},
                                  headers=operations.auth)
        assert same.status == 200, await same.text()
        off = await client.patch(url, json={"agent_id": None}, headers=operations.auth)
        assert off.status == 200 and (await off.json())["agent_id"] is None
        done = await client.patch(url, json={"agent_id": own["id"]}, headers=admin.auth)
        assert done.status == 200, await done.text()
        assert await fetched_credentials(client, own_key) == [{"password": "mt5-pw-move"}]

    @pytest.mark.parametrize("role", WRITERS)
    async def test_adding_credentials_to_an_account_with_an_agent_needs_the_administrator(
            self, client: Any, mail_sink: Any, owner_conn: Any, role: str) -> None:
        admin = await signed_up(client, mail_sink)
        operations = await staff(client, mail_sink, owner_conn, admin, role)
        agent, key = await agent_with_key(client, admin)
        bare = await trading_account(client, admin, agent_id=agent["id"])
        filled = await trading_account(client, admin, agent_id=agent["id"],
                                       password="mt5-pw-first")
        for account in (bare, filled):
            url = f"/api/v1/accounts/{account['id']}"
            before = await owner_conn.fetchrow(ACCOUNT_ROW, account["id"])
            await assert_refused(await client.patch(
                url, json={"credentials": {"password": "mt5-pw-slipped"}},
                headers=operations.auth))
            assert await owner_conn.fetchrow(ACCOUNT_ROW, account["id"]) == before
        assert sorted(map(str, await fetched_credentials(client, key))) == \
            sorted(["None", str({"password": "mt5-pw-first"})])
        cleared = await client.patch(f"/api/v1/accounts/{filled['id']}",
                                     json={"credentials": None}, headers=operations.auth)
        assert cleared.status == 200 and (await cleared.json())["has_credentials"] is False
        done = await client.patch(f"/api/v1/accounts/{bare['id']}",
                                  json={"credentials": {"password": "mt5-pw-added"}},
                                  headers=admin.auth)
        assert done.status == 200, await done.text()
        assert {"password": "mt5-pw-added"} in await fetched_credentials(client, key)


    @pytest.mark.parametrize("field", ["server", "broker"])
    async def test_sending_assigned_credentials_elsewhere_needs_the_administrator(
            self, client: Any, mail_sink: Any, owner_conn: Any, field: str) -> None:
        """The agent logs in where the account says: a server of one's own would receive
        the stored password."""
        admin = await signed_up(client, mail_sink)
        operations = await staff(client, mail_sink, owner_conn, admin, "Operations")
        agent, _ = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"],
                                        password="mt5-pw-where")
        url = f"/api/v1/accounts/{account['id']}"
        before = await owner_conn.fetchrow(f"select {field} from accounts where id = $1::uuid",
                                           account["id"])
        await assert_refused(await client.patch(url, json={field: "Attacker-Live"},
                                                headers=operations.auth))
        assert await owner_conn.fetchrow(f"select {field} from accounts where id = $1::uuid",
                                         account["id"]) == before
        unchanged = await client.patch(url, json={field: account[field], "name": "Same"},
                                       headers=operations.auth)
        assert unchanged.status == 200, await unchanged.text()
        # Without an agent, or without credentials, there is nothing to send anywhere.
        for other in (await trading_account(client, admin, password="mt5-pw-idle"),
                      await trading_account(client, admin, agent_id=agent["id"])):
            moved = await client.patch(f"/api/v1/accounts/{other['id']}",
                                       json={field: "Elsewhere"}, headers=operations.auth)
            assert moved.status == 200, await moved.text()
        done = await client.patch(url, json={field: "Broker-Live-2"}, headers=admin.auth)
        assert done.status == 200 and (await done.json())[field] == "Broker-Live-2"

    async def test_deleting_and_recreating_the_agent_leads_nowhere(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        operations = await staff(client, mail_sink, owner_conn, admin, "Operations")
        agent, _ = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"],
                                        password="mt5-pw-again")
        deleted = await client.delete(f"/api/v1/agents/{agent['id']}", headers=operations.auth)
        assert deleted.status == 204
        url = f"/api/v1/accounts/{account['id']}"
        got = await (await client.get(url, headers=operations.auth)).json()
        assert (got["agent_id"], got["has_credentials"]) == (None, True)
        again, again_key = await agent_with_key(client, operations, "Same name")
        await assert_refused(await client.patch(url, json={"agent_id": again["id"]},
                                                headers=operations.auth))
        assert await fetched_credentials(client, again_key) == []


class TestRaces:
    """The decision waits for the other move on the same agent and sees what it did."""

    async def test_a_rotation_waits_for_an_assignment_in_progress_and_sees_it(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        developer = await staff(client, mail_sink, owner_conn, admin, "Developer")
        before = await owner_conn.fetchrow(AGENT_ROW, agent["id"])
        assignment = owner_conn.transaction()
        await assignment.start()
        # What an administrator's PATCH adding credentials holds while it runs.
        await owner_conn.execute("select 1 from agents where id = $1::uuid for share",
                                 agent["id"])
        rotation = asyncio.ensure_future(client.post(
            f"/api/v1/agents/{agent['id']}/rotate-key", headers=developer.auth))
        await asyncio.sleep(0.5)
        assert not rotation.done(), "the rotation decided without waiting"
        await owner_conn.execute("update accounts set credentials = '\\x00'::bytea "
                                 "where id = $1::uuid", account["id"])
        await assignment.commit()
        await assert_refused(await rotation)
        assert await owner_conn.fetchrow(AGENT_ROW, agent["id"]) == before

    async def test_adding_credentials_waits_for_a_rotation_in_progress(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        rotating = owner_conn.transaction()
        await rotating.start()
        await owner_conn.execute("select 1 from agents where id = $1::uuid for update",
                                 agent["id"])
        patch = asyncio.ensure_future(client.patch(
            f"/api/v1/accounts/{account['id']}", json={"credentials": {"password": "mt5-w"}},
            headers=admin.auth))
        await asyncio.sleep(0.5)
        assert not patch.done(), "credentials were set under a rotation in progress"
        await rotating.commit()
        assert (await patch).status == 200


class TestStepUp:
    """Step-up follows custody (API.md §3): decided on the account's stored state, not
    on the fields the body names. The enrolling session has a factor and proved none on
    itself, so it is asked, as a stale one is."""

    async def test_sending_credentials_elsewhere_asks_for_a_recent_factor(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        held = await trading_account(client, admin, agent_id=agent["id"],
                                     password="mt5-pw-stepup")
        idle = await trading_account(client, admin, password="mt5-pw-idle")
        bare = await trading_account(client, admin, agent_id=agent["id"])
        secret, _ = await enrol(client, admin)
        row = "select agent_id, credentials, broker, server, name from accounts where id = $1"
        for account, change in ((held, {"server": "Attacker-Live"}),
                                (held, {"broker": "Attacker Ltd", "name": "Renamed"}),
                                (held, {"agent_id": None}),
                                (held, {"credentials": {"password": "mt5-pw-other"}}),
                                (idle, {"server": "Attacker-Live"}),
                                (bare, {"credentials": {"password": "mt5-pw-new"}})):
            before = await owner_conn.fetchrow(row, UUID(account["id"]))
            refused = await client.patch(f"/api/v1/accounts/{account['id']}", json=change,
                                         headers=admin.auth)
            assert refused.status == 403, (change, await refused.text())
            assert (await refused.json())["code"] == "step_up_required"
            assert await owner_conn.fetchrow(row, UUID(account["id"])) == before
        # What hands nothing over passes: a rename, the agent it already has, and the
        # destination of an account whose agent has no credentials to take there.
        for account, change in ((held, {"name": "Renamed"}),
                                (held, {"agent_id": agent["id"], "name": "Same agent"}),
                                (bare, {"server": "Elsewhere", "broker": "Other Ltd"})):
            passed = await client.patch(f"/api/v1/accounts/{account['id']}", json=change,
                                        headers=admin.auth)
            assert passed.status == 200, (change, await passed.text())
        stepped = await client.post("/api/v1/auth/step-up", headers=admin.auth,
                                    json={"code": code(secret, 1)})
        assert stepped.status == 200, await stepped.text()
        fresh = {"Authorization": f"Bearer {(await stepped.json())['access_token']}"}
        moved = await client.patch(f"/api/v1/accounts/{held['id']}",
                                   json={"server": "Broker-Live-2"}, headers=fresh)
        assert moved.status == 200 and (await moved.json())["server"] == "Broker-Live-2"

    async def test_a_new_account_asks_when_it_carries_custody(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        await enrol(client, admin)
        plain = {**ACCOUNT, "login": 7100}
        assert (await client.post("/api/v1/accounts", json=plain,
                                  headers=admin.auth)).status == 201
        for extra in ({"agent_id": agent["id"]}, {"credentials": {"password": "pw-x-1"}}):
            refused = await client.post("/api/v1/accounts", headers=admin.auth,
                                        json={**plain, "login": 7101, **extra})
            assert refused.status == 403
            assert (await refused.json())["code"] == "step_up_required"
