"""Which browser origins may call the API (CORS), and how an origin is compared.

Exactly ARCHOMATA_FRONTEND_ORIGINS, with credentials: never `*`, never `null`, never an
origin reflected because it asked. A preflight may ask for the methods and headers the
SPA uses and nothing more; the SPA may read X-Request-ID, Retry-After and RateLimit-*.
The same normalised origins are what the CSRF middleware accepts.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp_cors
from aiohttp import web
from aiohttp_cors.urldispatcher_router_adapter import ResourcesUrlDispatcherRouterAdapter

log = logging.getLogger(__name__)

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
    defaults = {origin: options for origin in sorted(allowed_origins(configured))}
    cors = aiohttp_cors.CorsConfig(app, defaults=defaults,
                                   router_adapter=_RefusalsLogged(app.router, defaults))
    app[aiohttp_cors.APP_CONFIG_KEY] = cors  # as aiohttp_cors.setup does
    # aiohttp-cors looks the route up on every response before it reads Origin; to a
    # request that names none (probes, agents, scripts) it adds nothing, so it is not asked.
    added = list(app.on_response_prepare[before:])
    del app.on_response_prepare[before:]
    app.on_response_prepare.extend(_with_origin_only(hook) for hook in added)
    for resource in list(app.router.resources()):
        cors.add(resource)


class _RefusalsLogged(ResourcesUrlDispatcherRouterAdapter):
    """aiohttp-cors's own adapter, which also logs a preflight from an origin that is not
    allowed: the browser only says CORS failed, so the log names the origin and the
    setting to add it to. The answer is aiohttp-cors's refusal, a bare 403 problem that
    names neither (errors middleware)."""

    def __init__(self, router: web.UrlDispatcher, defaults: dict[str, Any]) -> None:
        super().__init__(router, defaults)
        self._origins = frozenset(defaults)
        self._allowed = ", ".join(defaults) or "none"

    async def get_preflight_request_config(
            self, preflight_request: web.Request, origin: str, requested_method: str) -> Any:
        if origin not in self._origins:
            log.warning("CORS preflight refused: origin %r is not in "
                        "ARCHOMATA_FRONTEND_ORIGINS (%s); add it there to allow it",
                        origin[:200], self._allowed,
                        extra={"origin": origin[:200], "path": preflight_request.path})
        return await super().get_preflight_request_config(
            preflight_request, origin, requested_method)


PrepareHook = Callable[[web.Request, web.StreamResponse], Awaitable[object]]


def _with_origin_only(hook: PrepareHook) -> PrepareHook:
    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        if "Origin" in request.headers:
            await hook(request, response)
    return prepare
