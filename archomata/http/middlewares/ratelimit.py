"""Limits requests per client IP and route class (see archomata.gate.ratelimit).

The class is the matched route's policy (archomata.access.route_policy), declared by its
guard: `login` for `public` routes (login, register, verify-email, resend-verification,
password-reset, accept-invitation, SSO, mfa/verify); `refresh` for /auth/refresh and
/auth/switch-org (each session's own limit is counted with its rotation, see
archomata.identity.sessions); `bridge` for `agent_only`; `api` for the rest of `/api`,
and for CORS preflights of limited routes (so that they never eat the login budget);
none for `operations` (health, metrics, the OpenAPI document) nor for the routes that
end a session (logout, logout-all, DELETE /auth/sessions/{id}). IPv6 clients count per
/64, the least a single subscriber is usually given (archomata.gate.check.client_bucket).

A 429 carries Retry-After and RateLimit-Limit/-Remaining/-Reset; answers that pass carry
the RateLimit-* headers too. A decision another middleware already made for the request
(`keys.RATE_DECISION`: the gate's call, archomata.gate.check, made by authn for the
`keys.RATE_TARGET` it set from `rate_target`) is used as it is: Redis is asked once.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.route_policy import RateClass, policy_of
from archomata.config import RateLimit
from archomata.errors import ApiError, RateLimited
from archomata.gate.check import client_bucket


def route_class(request: web.Request) -> RateClass | None:
    """Which limit applies to `request`; None when it is not limited."""
    return policy_of(request).rate


def rate_target(request: web.Request) -> tuple[str, RateLimit] | None:
    """The Redis key and the limit of `request`, for a middleware that counts the hit in a
    call of its own: authn puts it in `keys.RATE_TARGET` for the gate, which stores the
    decision in `keys.RATE_DECISION`."""
    cls = route_class(request)
    return None if cls is None else _target(request, cls)


def _target(request: web.Request, cls: RateClass) -> tuple[str, RateLimit]:
    config = request.app[keys.CONFIG]
    limit = {RateClass.LOGIN: config.rate_limit_login,
             RateClass.REFRESH: config.rate_limit_refresh,
             RateClass.BRIDGE: config.rate_limit_bridge,
             RateClass.API: config.rate_limit_api}[cls]
    return f"rl:{cls}:{client_bucket(request)}", limit


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
