"""One JSON line per request: method, route template, status, duration, request id.

Never the body, the query string or any header that may carry a secret. Routes whose
policy says so (the operations routes: a probe every few seconds) log only failures;
the metrics count them all. Nor does a CORS preflight the service answered: the browser
asks it before the request that follows, whose own line says all it would.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.route_policy import policy_of
from archomata.web.routing import route_name

log = logging.getLogger("archomata.access")
CLIENT_CLOSED = 499


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        if status >= 400 or (policy_of(request).log_success and not _preflight(request)):
            log.info("request", extra={
                "method": request.method,
                "route": route_name(request),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "request_id": request.get(keys.REQUEST_ID),
            })


def _preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
