"""Security headers on every response: successes, problem+json errors and 404s alike.

The middleware sits outside the errors middleware, so it sees every response the errors
middleware renders. A handler that streams (prepares its response itself) is covered by
`on_response_prepare`, which create_app registers too: both apply the same headers.

HSTS is sent only over HTTPS: served directly (`request.secure`), or behind a trusted
proxy that says `X-Forwarded-Proto: https`; a client's own claim from elsewhere is ignored.
`Cache-Control: no-store` where the matched route's policy says so (RoutePolicy.no_store:
every /api route, whose answers hold tokens, personal or trading data; not the operations
routes), and on unmatched /api paths alike.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata.access.route_policy import RoutePolicy, policy_of
from archomata.http.middlewares.client_ip import peer_is_trusted_proxy

CSP = "Content-Security-Policy"
ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# A JSON API loads nothing and is framed by no one. The one page the service serves (the
# API reference, archomata/ops/api_docs.py) sets a policy of its own, which is kept.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=63072000; includeSubDomains"
FORWARDED_PROTO = "X-Forwarded-Proto"


def is_https(request: web.Request) -> bool:
    if request.secure:
        return True
    if not peer_is_trusted_proxy(request):
        return False
    # The value our trusted peer appended is the rightmost one.
    protos = ",".join(request.headers.getall(FORWARDED_PROTO, []))
    return protos.rsplit(",", 1)[-1].strip().lower() == "https"


def apply(request: web.Request, headers: MutableMapping[str, str]) -> None:
    apply_policy(request, headers, policy_of(request))


def apply_policy(request: web.Request, headers: MutableMapping[str, str],
                 policy: RoutePolicy) -> None:
    """`apply`, the route's policy already looked up (the probe's short path)."""
    headers.update(ALWAYS)
    headers.setdefault(CSP, API_CSP)
    if policy.no_store:
        headers["Cache-Control"] = "no-store"
    if is_https(request):
        headers["Strict-Transport-Security"] = HSTS


@web.middleware
async def security_headers_middleware(request: web.Request,
                                      handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # only if the errors middleware let one through
        apply(request, exc.headers)
        raise
    if not response.prepared:
        apply(request, response.headers)
    return response


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """For responses a handler prepares itself (streams), which no middleware can touch."""
    if "X-Content-Type-Options" not in response.headers:
        apply(request, response.headers)
