"""Platform administration: lists, disabling orgs and users, with immediate effect."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from archomata import keys
from archomata.config import Config
from tests.factories import FRONTEND, login, platform_admin, signed_up


class TestPlatformAdmin:
    async def test_admin_has_no_org_and_org_routes_say_no_org(self, client: Any,
                                                              config: Config) -> None:
        admin = await platform_admin(client, config)
        assert admin.body["org"] is None
        assert admin.org_id is None
        me = await (await client.get("/api/v1/me", headers=admin.auth)).json()
        assert me["platform_role"] == "platform_administrator"
        assert me["org"] is None

    async def test_lists_are_for_platform_admins_only(self, client: Any, config: Config,
                                                      mail_sink: Any) -> None:
        member = await signed_up(client, mail_sink)
        await signed_up(client, mail_sink)  # at least two orgs, so there is a second page
        for path in ("/api/v1/admin/orgs", "/api/v1/admin/users"):
            assert (await client.get(path, headers=member.auth)).status == 403
        admin = await platform_admin(client, config)
        orgs = await (await client.get("/api/v1/admin/orgs?limit=1", headers=admin.auth)).json()
        assert len(orgs["items"]) == 1
        assert orgs["next_cursor"]
        more = await client.get(f"/api/v1/admin/orgs?limit=1&cursor={orgs['next_cursor']}",
                                headers=admin.auth)
        page_two = await more.json()
        assert page_two["items"][0]["id"] != orgs["items"][0]["id"]
        bad = await client.get("/api/v1/admin/orgs?cursor=garbage", headers=admin.auth)
        assert bad.status == 422
        big = await client.get("/api/v1/admin/users?limit=500", headers=admin.auth)
        assert big.status == 422

    async def test_disabled_org_is_refused_next_request_and_after_redis_flush(
            self, client: Any, config: Config, mail_sink: Any, owner_conn: Any) -> None:
        member = await signed_up(client, mail_sink)
        admin = await platform_admin(client, config)
        assert (await client.get("/api/v1/me", headers=member.auth)).status == 200
        response = await client.post(f"/api/v1/admin/orgs/{member.org_id}/disable",
                                     headers=admin.auth)
        assert response.status == 200
        assert (await response.json())["disabled"] is True
        refused = await client.get("/api/v1/me", headers=member.auth)
        assert refused.status == 401
        assert (await refused.json())["code"] == "org_disabled"
        assert member.refresh is not None
        cannot_refresh = await client.post("/api/v1/auth/refresh", headers=member.cookie)
        assert cannot_refresh.status == 401
        await client.app[keys.REDIS].flushall()
        assert (await client.get("/api/v1/me", headers=member.auth)).status == 401
        assert await client.app[keys.REDIS].exists(f"rv:org:{member.org_id}")
        relogin = await client.post("/api/v1/auth/login", json={
            "email": member.email, "password": member.password})
        assert relogin.status == 403
        assert (await relogin.json())["code"] == "org_disabled"
        actions = await owner_conn.fetch(
            "select action from audit_log where org_id = $1 and action like 'org.%'",
            member.org_id)
        assert [a["action"] for a in actions] == ["org.disabled"]

        admin = await login(client, admin.email, admin.password)  # the flush ended every session
        enabled = await client.post(f"/api/v1/admin/orgs/{member.org_id}/enable",
                                    headers={**admin.auth, "Origin": FRONTEND})
        assert enabled.status == 200
        await login(client, member.email, member.password)

    async def test_disabling_a_user_ends_their_access(self, client: Any, config: Config,
                                                      mail_sink: Any) -> None:
        member = await signed_up(client, mail_sink)
        admin = await platform_admin(client, config)
        response = await client.patch(f"/api/v1/admin/users/{member.user_id}",
                                      json={"disabled": True}, headers=admin.auth)
        assert response.status == 200
        assert (await client.get("/api/v1/me", headers=member.auth)).status == 401
        relogin = await client.post("/api/v1/auth/login", json={
            "email": member.email, "password": member.password})
        assert (await relogin.json())["code"] == "invalid_credentials"

    async def test_platform_role_change_reaches_the_next_token(
            self, client: Any, config: Config, mail_sink: Any) -> None:
        member = await signed_up(client, mail_sink)
        admin = await platform_admin(client, config)
        response = await client.patch(f"/api/v1/admin/users/{member.user_id}",
                                      json={"platform_role": "platform_administrator"},
                                      headers=admin.auth)
        assert response.status == 200
        assert (await client.get("/api/v1/me", headers=member.auth)).status == 401
        promoted = await login(client, member.email, member.password)  # no wait: exact cut
        assert (await client.get("/api/v1/admin/orgs", headers=promoted.auth)).status == 200

    async def test_unknown_ids_are_404(self, client: Any, config: Config) -> None:
        admin = await platform_admin(client, config)
        for path in ("/api/v1/admin/orgs/00000000-0000-0000-0000-000000000000/disable",
                     "/api/v1/admin/orgs/not-a-uuid/disable"):
            assert (await client.post(path, headers=admin.auth)).status == 404
        response = await client.patch("/api/v1/admin/users/not-a-uuid", json={"disabled": True},
                                      headers=admin.auth)
        assert response.status == 404


class TestMe:
    async def test_registration_makes_an_org_administrator_with_every_permission(
            self, client: Any, mail_sink: Any) -> None:
        from archomata.access.permissions import Permission

        me = await signed_up(client, mail_sink)
        body = await (await client.get("/api/v1/me", headers=me.auth)).json()
        assert body["org_role"] == "administrator"
        assert [r["name"] for r in body["roles"]] == ["Administrator"]
        assert set(body["permissions"]) == {p.value for p in Permission}


class TestAdminColumns:
    """The runtime role cannot write a platform role or a disabled mark by hand (sql/020):
    a SQL injection in an org route could not make itself a platform administrator, lift
    its org's suspension or re-enable its user. Only the audited paths can."""

    # Each with $1: the user's id, or their org's.
    WRITES = (
        ("user", "update users set platform_role = 'platform_administrator' where id = $1"),
        ("user", "update users set disabled_at = null where id = $1"),
        ("org", "update orgs set disabled_at = now() where id = $1"),
        ("org", "update orgs set disabled_at = null where id = $1"),
        ("user", "insert into users (email, email_normalized, name, platform_role) "
                 "values ('x' || $1::uuid || '@x.com', 'x' || $1::uuid || '@x.com', 'X', "
                 "'platform_administrator')"),
        ("user", "select admin_update_user($1, 'platform_administrator', null)"),
        ("org", "select admin_set_org_disabled($1, true)"),
    )

    async def test_the_runtime_role_cannot_write_them(
            self, client: Any, config: Config, mail_sink: Any, owner_conn: Any) -> None:
        member = await signed_up(client, mail_sink)
        conn = await asyncpg.connect(config.database_url.reveal())
        try:
            for whose, sql in self.WRITES:
                async with conn.transaction():
                    await conn.execute("select set_config('app.platform', 'on', true)")
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(sql, member.user_id if whose == "user"
                                           else member.org_id)
        finally:
            await conn.close()
        row = await owner_conn.fetchrow(
            "select u.platform_role, o.disabled_at from users u, orgs o "
            "where u.id = $1 and o.id = $2", member.user_id, member.org_id)
        assert (row["platform_role"], row["disabled_at"]) == ("user", None)
        # What the runtime role still writes on those tables is untouched.
        assert (await client.patch("/api/v1/org", json={"name": "Renamed"},
                                   headers=member.auth)).status == 200

    async def test_the_admin_routes_change_them_with_their_entries(
            self, client: Any, config: Config, mail_sink: Any, owner_conn: Any) -> None:
        member = await signed_up(client, mail_sink)
        admin = await platform_admin(client, config)
        for path in ("disable", "enable"):
            done = await client.post(f"/api/v1/admin/orgs/{member.org_id}/{path}",
                                     headers=admin.auth)
            assert done.status == 200, await done.text()
        promoted = await client.patch(f"/api/v1/admin/users/{member.user_id}",
                                      json={"platform_role": "platform_administrator",
                                            "disabled": True}, headers=admin.auth)
        assert promoted.status == 200, await promoted.text()
        body = await promoted.json()
        assert (body["platform_role"], body["disabled"]) == ("platform_administrator", True)
        entries = await owner_conn.fetch(
            "select action, details from audit_log where resource_id = any($1::text[]) "
            "and action in ('org.disabled', 'org.enabled', 'user.updated') order by seq",
            [str(member.org_id), str(member.user_id)])
        assert [e["action"] for e in entries] == ["org.disabled", "org.enabled", "user.updated"]
        assert json.loads(entries[2]["details"])["changes"] == {
            "platform_role": {"from": "user", "to": "platform_administrator"},
            "disabled": {"from": False, "to": True}}
        assert await owner_conn.fetchval(
            "select platform_role from users where id = $1", admin.user_id) == \
            "platform_administrator"  # create-admin's path, audited as user.created
