"""Authentication: turns a bearer token, or on the bridge an agent's `X-API-Key`, into a
Principal, checking revocation on the way.

It never decides access (the guard beside each handler does). What it reads is the
route's policy (archomata.access.route_policy): nothing on the operations routes (a probe
that carries a token does not have it verified); a bearer token elsewhere, a bad one
ignored rather than refused on a public route, so a client that always sends its (maybe
expired) token can still log in or refresh; and `X-API-Key` on agent routes.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.route_policy import Authn, policy_of
from archomata.access.step_up import refuse_unenrolled
from archomata.bridge.api_keys import API_KEYS
from archomata.errors import ApiError, Unauthorized
from archomata.identity.authenticator import AUTHENTICATOR

BEARER = "bearer"
API_KEY_HEADER = "X-API-Key"


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
            request[keys.PRINCIPAL] = await request.app[AUTHENTICATOR].principal(
                request, token.strip())
        except ApiError:
            if not ignore_failures:
                raise
        await refuse_unenrolled(request)
    api_key = request.headers.get(API_KEY_HEADER)
    if header is None and api_key is not None and authn is Authn.AGENT:
        try:
            request[keys.PRINCIPAL] = await request.app[API_KEYS].principal(
                request, api_key)
        except ApiError:
            if not ignore_failures:
                raise
    return await handler(request)
