"""Organisation management: members, invitations, roles, groups, and their audit."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from archomata.access.permissions import SYSTEM_ROLES, Permission
from archomata.app import create_app
from archomata.config import Config
from tests.factories import (
    login,
    member_with_roles,
    register,
    signed_up,
    strong_password,
    unique_email,
    wait_for_mail,
)


async def role_ids(client: Any, session: Any) -> dict[str, str]:
    body = await (await client.get("/api/v1/roles", headers=session.auth)).json()
    return {r["name"]: r["id"] for r in body["items"]}


class TestCatalogue:
    async def test_roles_and_permissions_are_the_contracts(self, client: Any,
                                                           mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        roles = await (await client.get("/api/v1/roles", headers=me.auth)).json()
        served = {r["name"]: set(r["permissions"]) for r in roles["items"]}
        assert served == {name: {p.value for p in perms} for name, perms in SYSTEM_ROLES.items()}
        assert served["Viewer"] == {f"{r}:read" for r in (
            "accounts", "positions", "deals", "orders", "risk_limits", "strategies", "agents")}
        catalogue = await (await client.get("/api/v1/permissions", headers=me.auth)).json()
        assert {p["name"] for p in catalogue["items"]} == {p.value for p in Permission}
        assert {"name": "orders:cancel", "resource": "orders", "action": "cancel"} in \
            catalogue["items"]


class TestMembers:
    async def test_invite_a_new_person_who_joins_with_roles_and_groups(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        ids = await role_ids(client, admin)
        group = await (await client.post("/api/v1/groups", headers=admin.auth,
                                         json={"name": "Desk"})).json()
        email = unique_email("invitee")
        invited = await client.post("/api/v1/org/invitations", headers=admin.auth, json={
            "email": email, "org_role": "member", "role_ids": [ids["Trader"]],
            "group_ids": [group["id"]]})
        assert invited.status == 201, await invited.text()
        token = await wait_for_mail(mail_sink, email, "invited")
        password = strong_password()
        accepted = await client.post("/api/v1/auth/accept-invitation", json={
            "token": token, "name": "New Trader", "password": password})
        assert accepted.status == 200, await accepted.text()
        body = await accepted.json()
        assert body["org"]["id"] == str(admin.org_id)
        assert body["org"]["org_role"] == "member"
        me = await (await client.get("/api/v1/me", headers={
            "Authorization": f"Bearer {body['access_token']}"})).json()
        assert Permission.ORDERS_CREATE.value in me["permissions"]
        again = await client.post("/api/v1/auth/accept-invitation", json={
            "token": token, "name": "x", "password": strong_password()})
        assert again.status == 400
        assert (await again.json())["code"] == "invalid_token"
        listed = await (await client.get("/api/v1/org/members", headers=admin.auth)).json()
        joined = next(m for m in listed["items"] if m["email"] == email)
        assert [r["name"] for r in joined["roles"]] == ["Trader"]
        assert [g["name"] for g in joined["groups"]] == ["Desk"]
        actions = [r["action"] for r in await owner_conn.fetch(
            "select action from audit_log where org_id = $1", admin.org_id)]
        assert {"member.invited", "member.joined", "group.created"} <= set(actions)

    async def test_existing_account_needs_its_password_to_accept(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        email, password, _ = await register(client, mail_sink)
        await client.post("/api/v1/org/invitations", headers=admin.auth,
                          json={"email": email})
        token = await wait_for_mail(mail_sink, email, "invited")
        refused = await client.post("/api/v1/auth/accept-invitation",
                                    json={"token": token, "password": "wrong-password-1"})
        assert refused.status == 401
        accepted = await client.post("/api/v1/auth/accept-invitation",
                                     json={"token": token, "password": password})
        assert accepted.status == 200
        session = await login(client, email, password, org_id=admin.org_id)
        assert session.org_id == admin.org_id

    async def test_forged_invitation_tokens_are_invalid(self, client: Any,
                                                        mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        for token in ("garbage", f"{admin.org_id.hex}.guess", "00.x"):
            response = await client.post("/api/v1/auth/accept-invitation",
                                         json={"token": token, "name": "x",
                                               "password": strong_password()})
            assert response.status == 400

    async def test_last_administrator_cannot_be_demoted_or_removed(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        demote = await client.patch(f"/api/v1/org/members/{admin.user_id}",
                                    headers=admin.auth, json={"org_role": "member"})
        assert demote.status == 409
        assert (await demote.json())["code"] == "last_administrator"
        remove = await client.delete(f"/api/v1/org/members/{admin.user_id}", headers=admin.auth)
        assert remove.status == 409
        assert admin.org_id is not None
        other = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [],
                                        org_role="administrator")
        demoted = await client.patch(f"/api/v1/org/members/{admin.user_id}",
                                     headers=other.auth, json={"org_role": "member"})
        assert demoted.status == 200

    async def test_removed_member_is_refused_on_the_next_request(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                         ["Viewer"])
        assert (await client.get("/api/v1/org", headers=member.auth)).status == 200
        removed = await client.delete(f"/api/v1/org/members/{member.user_id}",
                                      headers=admin.auth)
        assert removed.status == 204
        refused = await client.get("/api/v1/org", headers=member.auth)
        assert refused.status == 401
        assert (await refused.json())["code"] == "membership_revoked"
        assert (await client.post("/api/v1/auth/refresh", headers=member.cookie)).status == 401

    async def test_removing_a_role_denies_the_very_next_request(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                         ["Risk Manager"])
        # Risk Manager may read members? No: members:read is Administrator's only.
        assert (await client.get("/api/v1/org/members", headers=member.auth)).status == 403
        ids = await role_ids(client, admin)
        granted = await client.put(f"/api/v1/org/members/{member.user_id}/roles",
                                   headers=admin.auth, json={"role_ids": [ids["Administrator"]]})
        assert granted.status == 200
        assert (await client.get("/api/v1/org/members", headers=member.auth)).status == 200
        revoked = await client.put(f"/api/v1/org/members/{member.user_id}/roles",
                                   headers=admin.auth, json={"role_ids": []})
        assert revoked.status == 200
        assert (await client.get("/api/v1/org/members", headers=member.auth)).status == 403

    async def test_group_roles_count_and_leaving_the_group_takes_them_away(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [])
        ids = await role_ids(client, admin)
        group = await (await client.post("/api/v1/groups", headers=admin.auth,
                                         json={"name": "Admins"})).json()
        await client.put(f"/api/v1/groups/{group['id']}/roles", headers=admin.auth,
                         json={"role_ids": [ids["Administrator"]]})
        assert (await client.get("/api/v1/groups", headers=member.auth)).status == 403
        put = await client.put(f"/api/v1/groups/{group['id']}/members", headers=admin.auth,
                               json={"user_ids": [str(member.user_id)]})
        assert put.status == 200
        assert (await client.get("/api/v1/groups", headers=member.auth)).status == 200
        await client.put(f"/api/v1/groups/{group['id']}/members", headers=admin.auth,
                         json={"user_ids": []})
        assert (await client.get("/api/v1/groups", headers=member.auth)).status == 403

    async def test_a_change_reaches_a_second_service_instance_at_once(
            self, client: Any, aiohttp_client: Any, config: Config, mail_sink: Any,
            owner_conn: Any) -> None:
        other_instance = await aiohttp_client(create_app(config))
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                         ["Administrator"])
        assert (await other_instance.get("/api/v1/org/members",
                                         headers=member.auth)).status == 200
        await client.put(f"/api/v1/org/members/{member.user_id}/roles", headers=admin.auth,
                         json={"role_ids": []})
        assert (await other_instance.get("/api/v1/org/members",
                                         headers=member.auth)).status == 403

    async def test_org_rename_is_for_administrators(self, client: Any, mail_sink: Any,
                                                    owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                         ["Administrator"])
        assert (await client.patch("/api/v1/org", headers=member.auth,
                                   json={"name": "Nope"})).status == 403
        renamed = await client.patch("/api/v1/org", headers=admin.auth, json={"name": "New"})
        assert renamed.status == 200
        assert (await (await client.get("/api/v1/org", headers=member.auth)).json())["name"] \
            == "New"

    @pytest.mark.parametrize("body", [{"name": ""}, {"name": "x", "id": "y"}, {}])
    async def test_bad_group_bodies_are_422(self, client: Any, mail_sink: Any,
                                            body: dict[str, Any]) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/groups", headers=admin.auth, json=body)
        assert response.status == 422

    async def test_group_names_are_unique_per_org(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        first = await client.post("/api/v1/groups", headers=admin.auth, json={"name": "Ops"})
        second = await client.post("/api/v1/groups", headers=admin.auth, json={"name": "Ops"})
        assert (first.status, second.status) == (201, 409)
        group = await first.json()
        deleted = await client.delete(f"/api/v1/groups/{group['id']}", headers=admin.auth)
        assert deleted.status == 204
        assert (await client.get(f"/api/v1/groups/{group['id']}",
                                 headers=admin.auth)).status == 404


def _uuid(value: Any) -> UUID:
    return UUID(str(value))
