"""Limits requests per client IP and route class (see archomata.web.ratelimit).

The class is the matched route's policy (archomata.access.route_policy), declared by its
guard: `login` for `public` routes (login, register, verify-email, resend-verification,
password-reset, accept-invitation, SSO, mfa/verify); `refresh` for /auth/refresh and
/auth/switch-org (each session's own limit is counted with its rotation, see
archomata.identity.sessions); `bridge` for `agent_only`; `api` for the rest of `/api`,
and for CORS preflights of limited routes (so that they never eat the login budget);
none for `operations` (health, metrics, the OpenAPI document) nor for the routes that
end a session (logout, logout-all, DELETE /auth/sessions/{id}). IPv6 clients count per
/64, the least a single subscriber is usually given.

A 429 carries Retry-After and RateLimit-Limit/-Remaining/-Reset; answers that pass carry
the RateLimit-* headers too. A decision another middleware already made for the request
(`keys.RATE_DECISION`, see `rate_target`) is used as it is: Redis is asked once.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.commands.core import AsyncScript

from archomata import keys
from archomata.access.route_policy import RateClass, policy_of
from archomata.config import RateLimit
from archomata.errors import ApiError, RateLimited
from archomata.redis_boundary import REDIS_FAILURES, unavailable
from archomata.web.ratelimit import PendingHit, optional_hit_call

IPV6_PREFIX = 64


def route_class(request: web.Request) -> RateClass | None:
    """Which limit applies to `request`; None when it is not limited."""
    return policy_of(request).rate


def _bucket(client_ip: str) -> str:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


def rate_target(request: web.Request) -> tuple[str, RateLimit] | None:
    """The Redis key and the limit of `request`, for a middleware that wants to queue the
    check in its own pipeline (then store the decision in `keys.RATE_DECISION`)."""
    cls = route_class(request)
    return None if cls is None else _target(request, cls)


def _target(request: web.Request, cls: RateClass) -> tuple[str, RateLimit]:
    config = request.app[keys.CONFIG]
    limit = {RateClass.LOGIN: config.rate_limit_login,
             RateClass.REFRESH: config.rate_limit_refresh,
             RateClass.BRIDGE: config.rate_limit_bridge,
             RateClass.API: config.rate_limit_api}[cls]
    return f"rl:{cls}:{client_bucket(request)}", limit


def client_bucket(request: web.Request) -> str:
    """The client as the limits count it: its address, or its /64 for IPv6."""
    return _bucket(request.get(keys.CLIENT_IP) or request.remote or "unknown")


async def call_gate(script: AsyncScript, request: web.Request | None, own_keys: list[str],
                    *, refuse_now: bool = False, extra_args: list[Any] | None = None
                    ) -> list[Any]:
    """Runs a Redis script that starts with OPTIONAL_HIT (archomata.web.ratelimit),
    counting `request`'s rate limit in the same call (none when `request` is None or not
    limited), and returns the script's own reply. The decision goes to
    `request[keys.RATE_DECISION]` for the middleware below; with `refuse_now` a refusal is
    raised here, before the caller spends anything on the request. If Redis fails, the
    decision comes from memory and ServiceUnavailable is raised: the callers check
    revocation with the reply, so without it no credential passes (fail closed)."""
    target = rate_target(request) if request is not None else None
    limiter = request.app.get(keys.RATE_LIMITER) if request is not None else None
    if limiter is None:
        target = None
    script_keys, args = optional_hit_call(target, own_keys)
    args += extra_args or []  # the script's own ARGV, from ARGV[3]
    failure: BaseException | None = None
    try:
        reply = await script(keys=script_keys, args=args)
    except REDIS_FAILURES as exc:  # the rate limit first, from memory; then the 503
        failure, reply = exc, [exc]
    if request is not None and limiter is not None and target is not None:
        decision = limiter.result_from(PendingHit(*target), reply[0])
        request[keys.RATE_DECISION] = decision
        if refuse_now:
            decision.raise_if_refused()
    if failure is not None:
        raise unavailable() from failure
    return list(reply[1:])


@web.middleware
async def ratelimit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cls = route_class(request)
    if cls is None:
        return await handler(request)
    decision = request.get(keys.RATE_DECISION)
    if decision is None:
        decision = await request.app[keys.RATE_LIMITER].hit(*_target(request, cls))
        request[keys.RATE_DECISION] = decision
    decision.raise_if_refused()
    try:
        response = await handler(request)
    except RateLimited:
        raise  # another limit (the login throttle): our remaining count would mislead
    except ApiError as exc:
        exc.headers.update(decision.headers())
        raise
    if not response.prepared:
        response.headers.update(decision.headers())
    return response
