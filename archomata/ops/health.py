"""Operations endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from archomata import keys
from archomata.access.guards import operations
from archomata.metrics import METRICS
from archomata.ops.migrations import current_version
from archomata.redis_boundary import REDIS_FAILURES
from archomata.web.openapi import doc

routes = web.RouteTableDef()
CHECK_TIMEOUT_SECONDS = 2.0
LIVE_BYTES = b'{"status": "ok"}'
LIVE_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


@routes.get("/health/live")
@operations(probe=True)  # answered past the pipeline (RoutePolicy.probe): it must not fail
async def live(request: web.Request) -> web.Response:
    # What json_response would answer, serialised and typed once: probes come every few
    # seconds, and a content type given as text is parsed again on every answer.
    return web.Response(body=LIVE_BYTES, headers=LIVE_HEADERS)


async def _check_postgres(app: web.Application) -> tuple[str, int | None]:
    try:
        async with app[keys.DB_POOL].acquire(timeout=CHECK_TIMEOUT_SECONDS) as conn:
            return "ok", await current_version(conn)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return "unavailable", None


async def _check_redis(app: web.Application) -> str:
    try:
        await app[keys.REDIS].ping()
    except REDIS_FAILURES:  # readiness reports the outage, it does not answer it
        return "unavailable"
    return "ok"


@routes.get("/health/ready")
@operations
async def ready(request: web.Request) -> web.Response:
    app = request.app
    if app[keys.STOPPING].is_set():  # SIGTERM came: take this instance out of rotation
        return web.json_response({"status": "unavailable", "checks": {"process": "stopping"}},
                                 status=503)
    async with asyncio.timeout(CHECK_TIMEOUT_SECONDS * 2):
        (postgres, version), redis = await asyncio.gather(_check_postgres(app), _check_redis(app))
    expected = app[keys.EXPECTED_SCHEMA_VERSION]
    if postgres != "ok":
        schema = "unknown"
    elif version is None or version < expected:
        schema = "outdated"
    else:
        schema = "ok"
    checks: dict[str, Any] = {"postgres": postgres, "redis": redis, "schema": schema}
    healthy = all(value == "ok" for value in checks.values())
    return web.json_response({"status": "ok" if healthy else "unavailable", "checks": checks},
                             status=200 if healthy else 503)


@routes.get("/metrics")
@operations
async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].text()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/v1/openapi.json")
@operations
@doc("This OpenAPI document")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.OPENAPI])
