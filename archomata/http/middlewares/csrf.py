"""Refuses state-changing requests that a page on another site could have made.

A POST, PUT, PATCH or DELETE:

- naming an origin (`Origin`, or without it the origin of `Referer`) outside
  ARCHOMATA_FRONTEND_ORIGINS, or `Origin: null` (sandboxed frames, privacy redirects),
  is refused 403 `csrf_origin_mismatch`, whatever it carries: this stops login CSRF too;
- naming none but carrying the refresh cookie is refused the same way: the cookie is
  the one ambient credential a browser adds by itself, so it must come with proof of
  where the request was made;
- naming none and carrying no cookie passes: a script holding a bearer token, which no
  other site can make a browser attach;
- with a body type an HTML form (or a no-preflight fetch) can send, `form`, `multipart`
  or `text/plain`, is refused 415 before any handler runs, read the body or not: every
  route here takes JSON, which a cross-site page cannot send without a CORS preflight.

A route whose policy declares an exemption, with its reason, is not checked
(archomata.access.route_policy): the bridge's, since agents authenticate with `X-API-Key`
alone, a header no browser adds on its own, so a forged cross-site request carries no
credential; and the operations routes, which only read. It is the matched route's
declaration, never the path: no path trick can reach a route as exempt.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.route_policy import policy_of
from archomata.errors import Forbidden, UnsupportedMediaType
from archomata.http.cors import allowed_origins, origin_of

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_CONTENT_TYPES = frozenset({
    "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
REFRESH_COOKIE = "archomata_refresh"  # API.md §2; set by archomata.identity.web


def claimed_origin(request: web.Request) -> str | None:
    """The origin the browser says the request comes from: None when it says nothing,
    `null` when it says something that is not an origin."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin_of(origin, bare=True) or "null"
    referer = request.headers.get("Referer")
    if referer is not None:
        return origin_of(referer) or "null"
    return None


def _mismatch(detail: str) -> Forbidden:
    return Forbidden(detail, code="csrf_origin_mismatch")


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in STATE_CHANGING or policy_of(request).csrf_exempt is not None:
        return await handler(request)
    origin = claimed_origin(request)
    if origin is None:
        # Passes without the cookie: a bearer token is never attached by a browser itself.
        if REFRESH_COOKIE in request.cookies:
            raise _mismatch("A request carrying the session cookie must say its Origin.")
    elif origin not in allowed_origins(request.app[keys.CONFIG].frontend_origins):
        raise _mismatch("Requests from this origin are not accepted.")
    if "Content-Type" in request.headers and request.content_type in FORM_CONTENT_TYPES:
        raise UnsupportedMediaType("Send the body as application/json.")
    return await handler(request)
