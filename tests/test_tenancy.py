"""Cross-tenant: every route of org A called with org B's object ids answers 404 and
changes nothing. A route with a path id that this table does not know fails the test, so
new resources must join it."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import jwt

from tests.access.test_guards import api_routes
from tests.factories import (
    agent_auth,
    agent_with_key,
    member_with_roles,
    signed_up,
    trading_account,
    unique_email,
)

# Valid bodies, so that a 404 cannot hide behind a 422.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/v1/org/members/{user_id}"): {"org_role": "member"},
    ("PUT", "/api/v1/org/members/{user_id}/roles"): {"role_ids": []},
    ("PATCH", "/api/v1/groups/{group_id}"): {"name": "Taken over"},
    ("PUT", "/api/v1/groups/{group_id}/members"): {"user_ids": []},
    ("PUT", "/api/v1/groups/{group_id}/roles"): {"role_ids": []},
    ("PATCH", "/api/v1/accounts/{account_id}"): {"name": "Taken over"},
    ("PUT", "/api/v1/accounts/{account_id}/risk-limits"): {
        "trading_enabled": False, "max_order_volume": None, "max_open_positions": None,
        "max_daily_loss": None},
    ("POST", "/api/v1/accounts/{account_id}/orders"): {
        "symbol": "EURUSD", "side": "buy", "type": "market", "volume": "1"},
    ("PATCH", "/api/v1/strategies/{strategy_id}"): {"enabled": True},
}
# Platform routes are cross-org by design: they are for platform administrators only.
PLATFORM_PREFIX = "/api/v1/admin/"
# The API reference's page and assets: operations routes, `{name}` a file of the bundled
# Swagger UI, the same for everyone.
REFERENCE_PREFIX = "/api/v1/docs"
# Path parameters that name no object of any tenant (SSO's `{provider}`: google, azure).
NOT_OBJECTS = frozenset({"provider"})

SNAPSHOT = """
    select (select json_agg(m order by m.user_id) from memberships m where m.org_id = $1),
           (select json_agg(r order by r.user_id, r.role_id) from member_roles r
            where r.org_id = $1),
           (select json_agg(g order by g.id) from groups g where g.org_id = $1),
           (select json_agg(gm order by gm.user_id) from group_members gm where gm.org_id = $1),
           (select json_agg(gr order by gr.role_id) from group_roles gr where gr.org_id = $1),
           (select json_agg(a order by a.id) from agents a where a.org_id = $1),
           (select json_agg(a order by a.id) from accounts a where a.org_id = $1),
           (select json_agg(o order by o.id) from orders o where o.org_id = $1),
           (select json_agg(s order by s.id) from strategies s where s.org_id = $1),
           (select json_agg(i order by i.id) from invitations i where i.org_id = $1)
"""


async def org_b(client: Any, mail_sink: Any, owner_conn: Any) -> tuple[Any, dict[str, str]]:
    admin = await signed_up(client, mail_sink, org_name="Org B")
    assert admin.org_id is not None
    member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Trader"])
    group = await (await client.post("/api/v1/groups", headers=admin.auth,
                                     json={"name": "B desk"})).json()
    await client.put(f"/api/v1/groups/{group['id']}/members", headers=admin.auth,
                     json={"user_ids": [str(member.user_id)]})
    sid = jwt.decode(member.access, options={"verify_signature": False})["sid"]
    identity_id = await owner_conn.fetchval(
        "insert into user_identities (user_id, provider, subject, email) "
        "values ($1, 'google', $2, $3) returning id", member.user_id, sid, member.email)
    invited = await client.post("/api/v1/org/invitations", headers=admin.auth,
                                json={"email": unique_email("b-invitee")})
    assert invited.status == 201, await invited.text()
    return admin, {"user_id": str(member.user_id), "group_id": group["id"], "session_id": sid,
                   "identity_id": str(identity_id), "invitation_id": (await invited.json())["id"],
                   **await trading_of(client, admin)}


async def trading_of(client: Any, admin: Any) -> dict[str, str]:
    """An agent, an account with an open position, an order and a strategy of the org."""
    agent, key = await agent_with_key(client, admin)
    account = await trading_account(client, admin, agent_id=agent["id"])
    await client.put(f"/api/v1/bridge/accounts/{account['login']}/state", headers=agent_auth(key),
                     json={"balance": "1", "equity": "1", "margin": "0", "free_margin": "1",
                           "currency": "USD", "positions": [{
                               "ticket": 41, "symbol": "EURUSD", "side": "buy",
                               "volume": "1", "open_price": "1.1",
                               "opened_at": "2026-11-28T09:30:00Z"}]})
    order = await (await client.post(f"/api/v1/accounts/{account['id']}/orders",
                                     headers=admin.auth, json=BODIES[
                                         ("POST", "/api/v1/accounts/{account_id}/orders")])).json()
    strategy = await (await client.post("/api/v1/strategies", headers=admin.auth,
                                        json={"name": "B strategy"})).json()
    return {"agent_id": agent["id"], "account_id": account["id"], "ticket": "41",
            "order_id": order["id"], "strategy_id": strategy["id"]}


class TestCrossTenant:
    async def test_org_a_sees_404_for_every_object_of_org_b(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        org_a = await signed_up(client, mail_sink, org_name="Org A")
        b_admin, b_ids = await org_b(client, mail_sink, owner_conn)
        b_org = UUID(str(b_admin.org_id))
        before = await owner_conn.fetchrow(SNAPSHOT, b_org)
        unknown, leaked = [], []
        for method, path, rule in api_routes(client.app):
            params = re.findall(r"\{(\w+)[^}]*\}", path)
            if not params or path.startswith((PLATFORM_PREFIX, REFERENCE_PREFIX)) \
                    or rule.kind == "agent" \
                    or set(params) <= NOT_OBJECTS:
                continue
            if any(p not in b_ids for p in params):
                unknown.append(f"{method} {path}")
                continue
            url = re.sub(r"\{(\w+)[^}]*\}", lambda m: b_ids[m.group(1)], path)
            response = await client.request(method, url, headers=org_a.auth,
                                            json=BODIES.get((method, path)))
            if response.status != 404:
                leaked.append(f"{method} {path}: {response.status}")
        assert unknown == [], "add these routes' ids to the cross-tenant table"
        assert leaked == []
        assert await owner_conn.fetchrow(SNAPSHOT, b_org) == before
        listed = await client.get("/api/v1/org/members", headers=b_admin.auth)
        assert len((await listed.json())["items"]) == 2
