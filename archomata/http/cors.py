"""Which browser origins may call the API (CORS), and how an origin is compared.

Exactly ARCHOMATA_FRONTEND_ORIGINS, with credentials: never `*`, never `null`, never an
origin reflected because it asked. A preflight may ask for the methods and headers the
SPA uses and nothing more; the SPA may read X-Request-ID, Retry-After and RateLimit-*.
The same normalised origins are what the CSRF middleware accepts.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp_cors
from aiohttp import web

ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
EXPOSE_HEADERS = ("X-Request-ID", "Retry-After",
                  "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
PREFLIGHT_MAX_AGE_SECONDS = 600
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str, *, bare: bool = False) -> str | None:
    """`scheme://host[:port]` of `url`, lower-cased, default port dropped; None when it
    is not an http(s) URL with a host, or (with `bare`) when it has more than an origin."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme.lower() not in DEFAULT_PORTS or not host:
        return None
    if bare and (parts.path not in {"", "/"} or parts.query or parts.fragment
                 or parts.username is not None):
        return None
    scheme = parts.scheme.lower()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port and port != DEFAULT_PORTS[scheme] else "")


@functools.lru_cache(maxsize=16)
def allowed_origins(configured: tuple[str, ...]) -> frozenset[str]:
    """The configured origins, normalised; config.py already refused anything else."""
    origins = {origin_of(origin, bare=True) for origin in configured}
    if None in origins:
        raise ValueError("ARCHOMATA_FRONTEND_ORIGINS must list bare http(s) origins")
    return frozenset(o for o in origins if o is not None)


def setup_cors(app: web.Application, configured: tuple[str, ...]) -> None:
    """Enables CORS on every route registered so far: call it once routes are added."""
    # aiohttp-cors ships no type hints.
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=True, allow_methods=ALLOW_METHODS, allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS, max_age=PREFLIGHT_MAX_AGE_SECONDS)
    before = len(app.on_response_prepare)
    cors = aiohttp_cors.setup(app, defaults={
        origin: options for origin in sorted(allowed_origins(configured))})
    # aiohttp-cors looks the route up on every response before it reads Origin; to a
    # request that names none (probes, agents, scripts) it adds nothing, so it is not asked.
    added = list(app.on_response_prepare[before:])
    del app.on_response_prepare[before:]
    app.on_response_prepare.extend(_with_origin_only(hook) for hook in added)
    for resource in list(app.router.resources()):
        cors.add(resource)


PrepareHook = Callable[[web.Request, web.StreamResponse], Awaitable[object]]


def _with_origin_only(hook: PrepareHook) -> PrepareHook:
    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        if "Origin" in request.headers:
            await hook(request, response)
    return prepare
