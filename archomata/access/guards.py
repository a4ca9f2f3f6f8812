"""Access rules declared beside each handler; `create_app` refuses an `/api` route without one.

Authentication only turns credentials into a Principal; these decide. Each handler
carries exactly one rule (`public`, `operations`, `authenticated`, `require_permission`,
`require_org_admin`, `require_platform_admin`, `agent_only`), optionally stacked with
`require_write` for state-changing routes.

The rule also attaches the route's policy (archomata.access.route_policy: timeout, rate
class, CSRF exemption, what authn reads), defaulting from the rule and overridden beside
it where the route differs: `@agent_only(timeout=TimeoutClass.LONG_POLL)`. create_app
refuses a policy that contradicts its rule (`policy_problems`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, overload

from aiohttp import web

from archomata.access import route_policy, step_up
from archomata.access.caller import agent, member, person
from archomata.access.route_policy import POLICY_ATTR, Authn, RoutePolicy, declared_policy
from archomata.errors import Forbidden

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Decorator = Callable[[Handler], Handler]
ACCESS_ATTR = "__archomata_access__"
USER_RULES = frozenset({"auth", "perm", "org-admin", "platform-admin"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


def _checked(handler: Handler, check: Callable[[web.Request], object]) -> Handler:
    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        check(request)
        return await handler(request)
    return guarded


def _with_rule(rule: AccessRule, check: Callable[[web.Request], object] | None,
               policy: RoutePolicy | None) -> Decorator:
    """`policy` None: the rule (`require_write`) leaves the policy to the rule it stacks on."""
    def decorate(handler: Handler) -> Handler:
        inner_rule = access_rule(handler)
        if inner_rule is not None and not (rule.kind == "write" or inner_rule.kind == "write"):
            raise TypeError(f"{handler.__qualname__} declares two access rules")
        guarded = handler if check is None else _checked(handler, check)
        combined = rule
        if inner_rule is not None:
            base = inner_rule if rule.kind == "write" else rule
            combined = replace(base, write=True)
        setattr(guarded, ACCESS_ATTR, combined)
        if policy is not None:
            setattr(guarded, POLICY_ATTR, policy)
        return guarded
    return decorate


class Guard:
    """A rule usable bare (`@authenticated`) or with policy fields overridden
    (`@authenticated(timeout=TimeoutClass.UNTIMED)`)."""

    def __init__(self, rule: AccessRule, check: Callable[[web.Request], object] | None,
                 policy: RoutePolicy | None) -> None:
        self.rule, self.check, self.policy = rule, check, policy

    @overload
    def __call__(self, handler: Handler, /) -> Handler: ...

    @overload
    def __call__(self, handler: None = None, /, **overrides: Any) -> Decorator: ...

    def __call__(self, handler: Handler | None = None, /,
                 **overrides: Any) -> Handler | Decorator:
        if overrides and self.policy is None:
            raise TypeError("require_write has no policy of its own")
        policy = replace(self.policy, **overrides) if overrides and self.policy else self.policy
        decorate = _with_rule(self.rule, self.check, policy)
        return decorate if handler is None else decorate(handler)


# Open to anyone: a deliberate choice, not a forgotten guard. The login budget by default.
public = Guard(AccessRule("public"), None, route_policy.PUBLIC)
# Open to anyone and reading no credential at all: probes, metrics, the API document.
operations = Guard(AccessRule("public"), None, route_policy.OPERATIONS)
authenticated = Guard(AccessRule("auth"), person, route_policy.USER)


def require_permission(permission: str, **overrides: Any) -> Decorator:
    def check(request: web.Request) -> None:
        if permission not in member(request).principal.permissions:
            raise Forbidden(f"This needs the {permission} permission.")
    return Guard(AccessRule("perm", permission=str(permission)), check,
                 route_policy.USER)(**overrides)


def _check_org_admin(request: web.Request) -> None:
    if not member(request).principal.is_org_admin:
        raise Forbidden("Organisation administrators only.", code="org_admin_required")


require_org_admin = Guard(AccessRule("org-admin"), _check_org_admin, route_policy.USER)


def _check_platform_admin(request: web.Request) -> None:
    if not person(request).principal.is_platform_admin:
        raise Forbidden("Platform administrators only.", code="platform_admin_required")


require_platform_admin = Guard(AccessRule("platform-admin"), _check_platform_admin,
                               route_policy.USER)


agent_only = Guard(AccessRule("agent"), agent, route_policy.AGENT)


def _check_write(request: web.Request) -> None:
    principal = member(request).principal
    if principal.is_org_admin:
        return
    if not any(not p.endswith(":read") for p in principal.permissions):
        raise Forbidden("Read-only members cannot change anything.", code="read_only")


require_write = Guard(AccessRule("write"), _check_write, None)


def _contradictions(kind: str | None, method: str, policy: RoutePolicy) -> Iterator[str]:
    if policy.csrf_exempt is not None and not policy.csrf_exempt.strip():
        yield "a CSRF exemption needs its reason"
    if kind == "agent":
        if policy.authn is not Authn.AGENT:
            yield "an agent route must take X-API-Key (authn agent)"
        if policy.csrf_exempt is None:
            yield "an agent route is called by no browser: it must be CSRF-exempt, with why"
    elif policy.authn is Authn.AGENT:
        yield "only agent_only routes take X-API-Key"
    if kind in USER_RULES and policy.authn is not Authn.BEARER:
        yield "a guarded route must verify the bearer token and refuse a bad one"
    if kind == "public" and policy.authn is Authn.BEARER:
        yield "a public route ignores a bad token rather than refuse it"
    if policy.authenticates and policy.rate is None and not (policy.unlimited or "").strip():
        yield "a route that verifies credentials must be rate limited, or say why not"
    if method in STATE_CHANGING and not policy.authenticates and policy.csrf_exempt is None:
        yield "a state-changing route that reads no credential must say why CSRF is moot"
    as_operations = replace(policy, probe=False) == route_policy.OPERATIONS
    if policy.probe and (method != "GET" or not as_operations):
        yield "only a GET with the operations policy may be answered as a probe"


def policy_problems(app: web.Application) -> list[str]:
    """`/api` routes without an access rule (`require_write` alone is none), routes without
    a declared policy, or whose policy contradicts their guard: create_app refuses to start
    with any. Preflights are aiohttp-cors's and need none."""
    problems = []
    for path, route in route_policy.routes_of(app):
        if route.method in {"HEAD", "OPTIONS"}:
            continue
        rule = access_rule(route.handler)
        if path.startswith(route_policy.API_ROOT) and (rule is None or rule.kind == "write"):
            problems.append(f"{route.method} {path}: no access rule")
            continue
        policy = declared_policy(route.handler)
        if policy is None:
            problems.append(f"{route.method} {path}: no guard declares its policy")
            continue
        kind = rule.kind if rule is not None else None
        problems += [f"{route.method} {path}: {why}"
                     for why in _contradictions(kind, route.method, policy)]
        why_not = step_up.problem(route.method, path, kind, rule.permission if rule else None,
                                  step_up.declaration(route.handler))
        if why_not is not None:
            problems.append(f"{route.method} {path}: {why_not}")
    return problems
