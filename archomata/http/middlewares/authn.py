"""Authentication: turns a bearer token, or on the bridge an agent's `X-API-Key`, into a
Principal, checking revocation on the way.

It never decides access (the guard beside each handler does). What it reads is the
route's policy (archomata.access.route_policy): nothing on the operations routes (a probe
that carries a token does not have it verified); a bearer token elsewhere, a bad one
ignored rather than refused on a public route, so a client that always sends its (maybe
expired) token can still log in or refresh; and `X-API-Key` on agent routes.

Who verifies a credential is not this module's business: it finds the authenticators
through `AUTHENTICATORS`, which `archomata.app` fills in (JWTs for people,
archomata.identity.authenticator; API keys for agents, archomata.bridge.api_keys), so the
pipeline imports neither identity nor bridge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.principal import Principal
from archomata.access.route_policy import Authn, policy_of
from archomata.access.step_up import refuse_unenrolled
from archomata.errors import ApiError, Unauthorized
from archomata.http.middlewares.ratelimit import rate_target

BEARER = "bearer"
API_KEY_HEADER = "X-API-Key"


class Authenticator(Protocol):
    """Turns a credential into the Principal it names, or raises an ApiError (401 for a
    bad or revoked one, 503 when it cannot be judged)."""

    async def principal(self, request: web.Request, credential: str, /) -> Principal: ...


@dataclass(frozen=True, slots=True)
class Authenticators:
    """The authenticators the pipeline asks, one per kind of credential."""

    people: Authenticator  # `Authorization: Bearer <JWT>`
    agents: Authenticator  # `X-API-Key`, on agent routes only


AUTHENTICATORS = web.AppKey("authenticators", Authenticators)


def _authenticators(request: web.Request) -> Authenticators:
    """The app's authenticators, about to be asked: they count the request's rate limit in
    their gate's one Redis call (archomata.gate.check), on the target put here."""
    request[keys.RATE_TARGET] = rate_target(request)
    return request.app[AUTHENTICATORS]


@web.middleware
async def authn_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[keys.PRINCIPAL] = None
    authn = policy_of(request).authn
    if authn is Authn.NONE:
        return await handler(request)
    ignore_failures = authn is Authn.OPTIONAL
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != BEARER or not token.strip():
                raise Unauthorized("Use `Authorization: Bearer <token>`.", code="token_invalid")
            request[keys.PRINCIPAL] = await _authenticators(request).people.principal(
                request, token.strip())
        except ApiError:
            if not ignore_failures:
                raise
        await refuse_unenrolled(request)
    api_key = request.headers.get(API_KEY_HEADER)
    if header is None and api_key is not None and authn is Authn.AGENT:
        try:
            request[keys.PRINCIPAL] = await _authenticators(request).agents.principal(
                request, api_key)
        except ApiError:
            if not ignore_failures:
                raise
    return await handler(request)
