"""Counts every request and its duration by method, route template and status
(archomata.metrics holds the counters; this is where the pipeline feeds them)."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata.metrics import METRICS
from archomata.web.routing import route_name


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.served(request.method, route_name(request), status,
                       time.perf_counter() - started)
