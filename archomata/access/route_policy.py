"""What a route asks of the middlewares, declared by its guard beside the handler.

Each guard (archomata.access.guards) attaches a frozen `RoutePolicy` to the handler, its
defaults following from the guard, a field overridden where the route differs
(`@agent_only(timeout=TimeoutClass.LONG_POLL)`). `install` builds, once, a table from
the router's routes to their policies; the timeout, CSRF, authn, rate-limit,
access-log and security-header middlewares read `policy_of(request)`, one dict lookup
on the matched route, and never look at the path. `create_app` refuses a route without
a policy or with one that contradicts its guard (archomata.access.guards.policy_problems).

A request that matched no route (404, 405) has no declaration: it is classed by the
part of the tree it aimed at (`unmatched_policy`), so probing unknown `/api` paths still
spends the API budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

POLICY_ATTR = "__archomata_route_policy__"


class Authn(StrEnum):
    """What the authn middleware does with the credentials a request carries."""

    NONE = "none"          # reads none: a bearer token is not even verified
    OPTIONAL = "optional"  # verifies a bearer token if sent; a bad one is ignored
    BEARER = "bearer"      # verifies a bearer token; a bad one is refused 401
    AGENT = "agent"        # as BEARER, and `X-API-Key` when there is no bearer token


class RateClass(StrEnum):
    """The per-IP budget a route spends (ARCHOMATA_RATE_LIMIT_LOGIN, _REFRESH, _BRIDGE,
    _API)."""

    LOGIN = "login"
    REFRESH = "refresh"  # refresh and switch-org: an office behind one address (contract §5)
    BRIDGE = "bridge"
    API = "api"


class TimeoutClass(StrEnum):
    DEFAULT = "default"      # ARCHOMATA_REQUEST_TIMEOUT_SECONDS
    LONG_POLL = "long_poll"  # the bridge's long poll: its own, longer timeout
    UNTIMED = "untimed"      # bounded otherwise (streams: the stall cut-off; probes: none wait)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    authn: Authn
    rate: RateClass | None  # None: not rate limited
    timeout: TimeoutClass = TimeoutClass.DEFAULT
    csrf_exempt: str | None = None  # why no browser can forge the request; None: checked
    log_success: bool = True  # False: only answers >= 400 get an access-log line
    # Why a route that reads credentials is never rate limited (rate None): ending a
    # session is never refused (contract §5). None: a credential route must be limited.
    unlimited: str | None = None
    # `Cache-Control: no-store` on every answer: what the API returns carries tokens,
    # personal or trading data, which no browser or proxy cache may keep.
    no_store: bool = True
    # A probe (/health/live): its handler reads nothing of the request, waits on nothing
    # and cannot fail, so the outermost middleware answers it itself, with the request id
    # and the security headers, past every other layer (a load balancer probes each
    # instance every few seconds; the layers it skips would each do nothing for it).
    # Only an operations route may be one (archomata.access.guards.policy_problems).
    probe: bool = False

    @property
    def authenticates(self) -> bool:
        return self.authn is not Authn.NONE


AGENT_CSRF_REASON = ("agents authenticate with X-API-Key alone, a header no browser adds "
                     "on its own, so a forged cross-site request carries no credential")

# The defaults each guard gives its routes (archomata.access.guards).
PUBLIC = RoutePolicy(Authn.OPTIONAL, RateClass.LOGIN)  # open to anyone: the tight budget
USER = RoutePolicy(Authn.BEARER, RateClass.API)
AGENT = RoutePolicy(Authn.AGENT, RateClass.BRIDGE, csrf_exempt=AGENT_CSRF_REASON)
# Probes, metrics and the API document: they read no credential, change nothing, wait on
# nothing without a bound of their own, and a successful probe is not news for the log.
OPERATIONS = RoutePolicy(Authn.NONE, None, TimeoutClass.UNTIMED,
                         csrf_exempt="operations routes only read", log_success=False,
                         no_store=False)

# Ending a session (logout, logout-all, deleting one): authenticated, cheap, idempotent,
# and never refused, whatever the address has spent.
ENDS_A_SESSION = dict(rate=None, unlimited="ending a session is never refused")

# Routes nobody declares: CORS preflights (aiohttp-cors adds them) and unmatched requests.
_PREFLIGHT_LIMITED = RoutePolicy(Authn.NONE, RateClass.API)  # never the login budget
_PREFLIGHT_FREE = RoutePolicy(Authn.NONE, None)
_UNMATCHED_API = RoutePolicy(Authn.NONE, RateClass.API)
_UNMATCHED_BRIDGE = RoutePolicy(Authn.NONE, RateClass.BRIDGE)
_UNMATCHED_ELSEWHERE = RoutePolicy(Authn.NONE, None, no_store=False)
API_ROOT = "/api/"
BRIDGE_ROOT = "/api/v1/bridge/"

ROUTE_POLICIES = web.AppKey("route_policies", dict)  # dict[AbstractRoute, RoutePolicy]


def declared_policy(handler: Any) -> RoutePolicy | None:
    return getattr(handler, POLICY_ATTR, None)


def policy_of(request: web.Request) -> RoutePolicy:
    """The matched route's policy: what every middleware asks, one lookup each."""
    policy: RoutePolicy | None = request.app[ROUTE_POLICIES].get(request.match_info.route)
    return policy if policy is not None else unmatched_policy(request)


def unmatched_policy(request: web.Request) -> RoutePolicy:
    path = request.path
    if not path.startswith(API_ROOT):
        return _UNMATCHED_ELSEWHERE
    if path.startswith(BRIDGE_ROOT) and request.method != "OPTIONS":
        return _UNMATCHED_BRIDGE
    return _UNMATCHED_API


def routes_of(app: web.Application) -> Iterator[tuple[str, AbstractRoute]]:
    for route in app.router.routes():
        resource = route.resource
        yield (resource.canonical if resource is not None else "?"), route


def policy_table(app: web.Application) -> dict[AbstractRoute, RoutePolicy]:
    """Every route of the router with its policy; a preflight spends the API budget when
    the routes of its resource are limited at all, and nothing when they are not."""
    table: dict[AbstractRoute, RoutePolicy] = {}
    limited: set[Any] = set()
    for _, route in routes_of(app):
        policy = declared_policy(route.handler)
        if policy is not None:
            table[route] = policy
            if policy.rate is not None:
                limited.add(route.resource)
    for _, route in routes_of(app):
        if route.method == "OPTIONS" and route not in table:
            table[route] = _PREFLIGHT_LIMITED if route.resource in limited else _PREFLIGHT_FREE
    return table


Problems = Callable[[web.Application], list[str]]


def _check(app: web.Application, problems: Problems) -> None:
    found = problems(app)
    if found:
        raise RuntimeError("inconsistent route policies: " + "; ".join(found))


def install(app: web.Application, problems: Problems) -> None:
    """Checks every route with `problems` (archomata.access.guards.policy_problems) and builds the
    table: call it once routes, and their CORS preflights, are added. Checked and built
    again at start-up, for routes added after create_app (the tests' own)."""
    _check(app, problems)
    app[ROUTE_POLICIES] = policy_table(app)

    async def complete(app: web.Application) -> None:
        _check(app, problems)
        table = app[ROUTE_POLICIES]
        table.clear()
        table.update(policy_table(app))

    app.on_startup.append(complete)
