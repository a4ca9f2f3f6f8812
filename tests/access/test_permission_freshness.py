"""Every route that changes who may do what: the member's next request, on another
instance of the service, sees the change (the store schedules the cache bump itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from archomata.db import permission_cache
from archomata.errors import ServiceUnavailable
from tests.factories import Session, member_with_roles, signed_up


async def _role_ids(client: Any, admin: Session) -> dict[str, str]:
    body = await (await client.get("/api/v1/roles", headers=admin.auth)).json()
    return {r["name"]: r["id"] for r in body["items"]}


async def _group(client: Any, admin: Session, member: Session, role: str) -> str:
    """A group holding `member` that grants `role`."""
    ids = await _role_ids(client, admin)
    group = await (await client.post("/api/v1/groups", headers=admin.auth,
                                     json={"name": "Desk"})).json()
    for part, body in (("roles", {"role_ids": [ids[role]]}),
                       ("members", {"user_ids": [str(member.user_id)]})):
        put = await client.put(f"/api/v1/groups/{group['id']}/{part}", headers=admin.auth,
                               json=body)
        assert put.status == 200, await put.text()
    return str(group["id"])


# Each: (the member's direct roles, their org role, whether they sit in an
# Administrator-granting group), the change made by the admin, the probe the member
# makes, and the probe's status before and after.
Change = Callable[[Any, Session, Session, str | None], Awaitable[Any]]
CASES: dict[str, tuple[list[str], str, bool, Change, str, int, int]] = {
    "demote (PATCH member)": (
        [], "administrator", False,
        lambda c, admin, m, g: c.patch(f"/api/v1/org/members/{m.user_id}", headers=admin.auth,
                                       json={"org_role": "member"}),
        "/api/v1/org/invitations", 200, 403),
    "remove (DELETE member)": (
        ["Viewer"], "member", False,
        lambda c, admin, m, g: c.delete(f"/api/v1/org/members/{m.user_id}",
                                        headers=admin.auth),
        "/api/v1/accounts", 200, 401),
    "direct roles (PUT member roles)": (
        ["Administrator"], "member", False,
        lambda c, admin, m, g: c.put(f"/api/v1/org/members/{m.user_id}/roles",
                                     headers=admin.auth, json={"role_ids": []}),
        "/api/v1/org/members", 200, 403),
    "delete the group": (
        [], "member", True,
        lambda c, admin, m, g: c.delete(f"/api/v1/groups/{g}", headers=admin.auth),
        "/api/v1/groups", 200, 403),
    "leave the group (PUT group members)": (
        [], "member", True,
        lambda c, admin, m, g: c.put(f"/api/v1/groups/{g}/members", headers=admin.auth,
                                     json={"user_ids": []}),
        "/api/v1/groups", 200, 403),
    "the group's roles (PUT group roles)": (
        [], "member", True,
        lambda c, admin, m, g: c.put(f"/api/v1/groups/{g}/roles", headers=admin.auth,
                                     json={"role_ids": []}),
        "/api/v1/groups", 200, 403),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_change_of_permissions_reaches_a_second_instance_at_once(
        client: Any, aiohttp_client: Any, config: Config, mail_sink: Any, owner_conn: Any,
        case: str) -> None:
    direct, org_role, in_group, change, probe, before, after = CASES[case]
    other_instance = await aiohttp_client(create_app(config))
    admin = await signed_up(client, mail_sink)
    assert admin.org_id is not None
    member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, direct,
                                     org_role=org_role)
    group = await _group(client, admin, member, "Administrator") if in_group else None
    # The other instance caches what the member may do now ...
    assert (await other_instance.get(probe, headers=member.auth)).status == before
    assert (await other_instance.get(probe, headers=member.auth)).status == before
    changed = await change(client, admin, member, group)
    assert changed.status in (200, 204), await changed.text()
    # ... and its next request already sees the change.
    assert (await other_instance.get(probe, headers=member.auth)).status == after


class _Unreachable:
    async def raise_versions(self, versions: Mapping[UUID, int]) -> None:
        raise ServiceUnavailable("Redis is unavailable.")


async def test_a_change_the_cache_cannot_hear_of_is_rolled_back_not_committed_unseen(
        client: Any, mail_sink: Any, owner_conn: Any) -> None:
    admin = await signed_up(client, mail_sink)
    assert admin.org_id is not None
    member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])
    version = await _version(owner_conn, admin.org_id)
    with permission_cache(client.app[keys.DB_POOL], _Unreachable()):
        put = await client.put(f"/api/v1/org/members/{member.user_id}/roles",
                               headers=admin.auth, json={"role_ids": []})
    assert put.status == 503, await put.text()
    assert await owner_conn.fetchval(
        "select count(*) from member_roles where org_id = $1 and user_id = $2",
        admin.org_id, member.user_id) == 1
    assert await _version(owner_conn, admin.org_id) == version
    again = await client.put(f"/api/v1/org/members/{member.user_id}/roles",
                             headers=admin.auth, json={"role_ids": []})
    assert again.status == 200
    assert await _version(owner_conn, admin.org_id) == version + 1


async def _version(owner_conn: Any, org_id: Any) -> int:
    await owner_conn.execute("select set_config('app.platform', 'on', false)")
    found: int = await owner_conn.fetchval(
        "select coalesce((select version from permission_versions where org_id = $1), 0)",
        org_id)
    return found
