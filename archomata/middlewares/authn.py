"""Authentication: turns a bearer token, or on the bridge an agent's `X-API-Key`, into a
Principal, checking revocation on the way.

It never decides access (the guard beside each handler does). A bad token on a public
route is ignored rather than refused, so a client that always sends its (maybe expired)
token can still log in or refresh.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.bridge.api_keys import API_KEYS
from archomata.errors import ApiError, Unauthorized
from archomata.guards import access_rule
from archomata.security.authenticator import AUTHENTICATOR

BEARER = "bearer"
API_KEY_HEADER = "X-API-Key"
BRIDGE_PREFIX = "/api/v1/bridge/"


def _is_public(request: web.Request) -> bool:
    rule = access_rule(request.match_info.handler)
    return rule is None or rule.kind == "public"


@web.middleware
async def authn_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[keys.PRINCIPAL] = None
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        try:
            if scheme.lower() != BEARER or not token.strip():
                raise Unauthorized("Use `Authorization: Bearer <token>`.", code="token_invalid")
            request[keys.PRINCIPAL] = await request.app[AUTHENTICATOR].principal(
                request, token.strip())
        except ApiError:
            if not _is_public(request):
                raise
    api_key = request.headers.get(API_KEY_HEADER)
    if header is None and api_key is not None and request.path.startswith(BRIDGE_PREFIX):
        try:
            request[keys.PRINCIPAL] = await request.app[API_KEYS].principal(
                request, api_key)
        except ApiError:
            if not _is_public(request):
                raise
    return await handler(request)
