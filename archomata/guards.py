"""Access rules declared beside each handler; `create_app` refuses an `/api` route without one.

Authentication only turns credentials into a Principal; these decide. Each handler
carries exactly one rule (`public`, `authenticated`, `require_permission`,
`require_org_admin`, `require_platform_admin`, `agent_only`), optionally stacked with
`require_write` for state-changing routes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from archomata import keys
from archomata.errors import Forbidden, Unauthorized
from archomata.security.principal import ActorType, Principal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS_ATTR = "__archomata_access__"


@dataclass(frozen=True, slots=True)
class AccessRule:
    kind: str  # public | auth | perm | org-admin | platform-admin | agent
    permission: str | None = None
    write: bool = False

    def describe(self) -> str:
        text = f"perm {self.permission}" if self.kind == "perm" else self.kind
        return text + (" + write" if self.write else "")


def access_rule(handler: Any) -> AccessRule | None:
    return getattr(handler, ACCESS_ATTR, None)


def _with_rule(rule: AccessRule,
               check: Callable[[web.Request], None]) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        inner_rule = access_rule(handler)
        if inner_rule is not None and not (rule.kind == "write" or inner_rule.kind == "write"):
            raise TypeError(f"{handler.__qualname__} declares two access rules")

        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            check(request)
            return await handler(request)

        combined = rule
        if inner_rule is not None:
            base = inner_rule if rule.kind == "write" else rule
            combined = replace(base, write=True)
        setattr(guarded, ACCESS_ATTR, combined)
        return guarded
    return decorate


def _user(request: web.Request) -> Principal:
    principal = request.get(keys.PRINCIPAL)
    if principal is None:
        raise Unauthorized("Authentication is required.")
    if principal.actor_type is not ActorType.USER:
        raise Forbidden("This route is for people, not agents.")
    return principal


def _org_user(request: web.Request) -> Principal:
    principal = _user(request)
    if principal.org_id is None:
        raise Forbidden("This action needs an organisation.", code="no_org")
    return principal


def public(handler: Handler) -> Handler:
    """Marks a route as open to anyone: a deliberate choice, not a forgotten guard."""
    setattr(handler, ACCESS_ATTR, AccessRule("public"))
    return handler


authenticated = _with_rule(AccessRule("auth"), _user)


def require_permission(permission: str) -> Callable[[Handler], Handler]:
    def check(request: web.Request) -> None:
        if permission not in _org_user(request).permissions:
            raise Forbidden(f"This needs the {permission} permission.")
    return _with_rule(AccessRule("perm", permission=str(permission)), check)


def _check_org_admin(request: web.Request) -> None:
    if not _org_user(request).is_org_admin:
        raise Forbidden("Organisation administrators only.", code="org_admin_required")


require_org_admin = _with_rule(AccessRule("org-admin"), _check_org_admin)


def _check_platform_admin(request: web.Request) -> None:
    if not _user(request).is_platform_admin:
        raise Forbidden("Platform administrators only.", code="platform_admin_required")


require_platform_admin = _with_rule(AccessRule("platform-admin"), _check_platform_admin)


def _check_agent(request: web.Request) -> None:
    principal = request.get(keys.PRINCIPAL)
    if principal is None or principal.actor_type is not ActorType.AGENT:
        raise Unauthorized("A valid X-API-Key is required.", code="invalid_api_key")


agent_only = _with_rule(AccessRule("agent"), _check_agent)


def _check_write(request: web.Request) -> None:
    principal = _org_user(request)
    if principal.is_org_admin:
        return
    if not any(not p.endswith(":read") for p in principal.permissions):
        raise Forbidden("Read-only members cannot change anything.", code="read_only")


require_write = _with_rule(AccessRule("write"), _check_write)


def unguarded_api_routes(app: web.Application) -> list[str]:
    """`/api` routes that declare no access rule: create_app refuses to start with any."""
    missing = []
    for route in app.router.routes():
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        if not path.startswith("/api/") or route.method in {"HEAD", "OPTIONS"}:
            continue
        rule = access_rule(route.handler)
        if rule is None or rule.kind == "write":
            missing.append(f"{route.method} {path}")
    return missing
