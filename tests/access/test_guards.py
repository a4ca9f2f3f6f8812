"""Access rules: every /api route declares one, and each system role gets exactly what §4
gives it, on every route of the router (present and future)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from aiohttp import web

from archomata.access.guards import access_rule, policy_problems, require_write
from archomata.access.permissions import SYSTEM_ROLES
from archomata.app import create_app
from archomata.config import Config
from tests.factories import member_with_roles, platform_admin, signed_up

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def api_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    found = []
    for route in app.router.routes():
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        if path.startswith("/api/v1/") and route.method not in {"HEAD", "OPTIONS"}:
            found.append((route.method, path, access_rule(route.handler)))
    return found


def concrete(path: str) -> str:
    """A path with every parameter filled by an id that exists nowhere."""
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return "424242" if name in {"login", "ticket"} else str(uuid.uuid4())
    return re.sub(r"\{(\w+)[^}]*\}", fill, path)


class TestDeclarations:
    def test_every_api_route_declares_an_access_rule(self, config: Config) -> None:
        app = create_app(config)
        assert policy_problems(app) == []
        assert all(rule is not None for _, _, rule in api_routes(app))

    def test_an_unguarded_route_is_found(self, config: Config) -> None:
        app = create_app(config)

        async def naked(request: web.Request) -> web.Response:
            return web.Response()

        app.router.add_get("/api/v1/naked", naked)
        assert policy_problems(app) == ["GET /api/v1/naked: no access rule"]

    def test_write_alone_is_not_an_access_rule(self, config: Config) -> None:
        app = create_app(config)

        async def write_only(request: web.Request) -> web.Response:
            return web.Response()

        app.router.add_post("/api/v1/write-only", require_write(write_only))
        assert policy_problems(app) == ["POST /api/v1/write-only: no access rule"]

    def test_state_changing_routes_require_write_unless_public_or_personal(
            self, config: Config) -> None:
        app = create_app(config)
        missing = [f"{m} {p}" for m, p, rule in api_routes(app)
                   if m in WRITE_METHODS and rule.kind in {"perm", "org-admin"}
                   and not rule.write]
        assert missing == []


def allowed(rule: Any, role: str, org_admin: bool = False) -> bool:
    permissions = {p.value for p in SYSTEM_ROLES[role]}
    if rule.kind in {"public", "auth"}:
        ok = True
    elif rule.kind == "perm":
        ok = rule.permission in permissions
    elif rule.kind == "org-admin":
        ok = org_admin
    else:  # platform-admin, agent
        ok = False
    if ok and rule.write:
        ok = org_admin or any(not p.endswith(":read") for p in permissions)
    return ok


class TestMatrix:
    @pytest.mark.parametrize("role", sorted(SYSTEM_ROLES))
    async def test_each_role_gets_exactly_what_section_4_gives(
            self, client: Any, mail_sink: Any, owner_conn: Any, role: str) -> None:
        owner = await signed_up(client, mail_sink)
        assert owner.org_id is not None
        member = await member_with_roles(client, mail_sink, owner_conn, owner.org_id, [role])
        wrong = []
        for method, path, rule in api_routes(client.app):
            if rule.kind in {"public", "auth", "agent"}:
                continue  # not a matter of roles: tested with identity and the bridge
            response = await client.request(method, concrete(path), headers=member.auth,
                                            json={} if method in WRITE_METHODS else None)
            expected = allowed(rule, role)
            if (response.status == 403) == expected:
                wrong.append(f"{method} {path}: {response.status}, expected "
                             f"{'allowed' if expected else '403'}")
        assert wrong == []

    async def test_a_platform_administrator_has_no_org_access_without_membership(
            self, client: Any, config: Config) -> None:
        admin = await platform_admin(client, config)
        for method, path, rule in api_routes(client.app):
            if rule.kind not in {"perm", "org-admin"}:
                continue
            response = await client.request(method, concrete(path), headers=admin.auth,
                                            json={} if method in WRITE_METHODS else None)
            assert response.status == 403, f"{method} {path}"
            assert (await response.json())["code"] == "no_org"
