"""Answers a probe (RoutePolicy.probe: /health/live) past the rest of the pipeline.

Outermost, so that a load balancer's probe, every few seconds on every instance, costs
what a bare aiohttp app's answer costs (bench/health_live.py): the route's handler reads
nothing of the request, waits on nothing and cannot fail, so no other layer would do
anything for it (no credential, rate limit, timer, body, parameter or log line). What
every answer carries still does: the request id and the security headers, and the
request metrics count it as before. Every other request passes through at the price of
one lookup of its route's policy.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.route_policy import policy_of
from archomata.http.middlewares import request_id, security_headers
from archomata.metrics import METRICS
from archomata.web.routing import route_name


@web.middleware
async def probe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    policy = policy_of(request)
    if not policy.probe:
        return await handler(request)
    started = time.perf_counter()
    request[keys.REQUEST_ID] = rid = request_id.request_id_of(request)
    response = await request.match_info.handler(request)
    security_headers.apply_policy(request, response.headers, policy)
    response.headers[request_id.HEADER] = rid
    request.app[METRICS].served(request.method, route_name(request), response.status,
                                time.perf_counter() - started)
    return response
