"""Prometheus metrics, in a registry of the app's own (so two apps in one process, as in
the tests, never share counters)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from archomata import keys
from archomata.web.routing import route_name


class _PoolCollector(Collector):
    """The pool's connections, and the audit exports that share it (audit/export_slots.py)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool: asyncpg.Pool | None = self.app.get(keys.DB_POOL)
        size = GaugeMetricFamily("archomata_db_pool_size", "Connections open in the pool")
        free = GaugeMetricFamily("archomata_db_pool_free", "Idle connections in the pool")
        if pool is not None:
            size.add_metric([], pool.get_size())
            free.add_metric([], pool.get_idle_size())
        exports = GaugeMetricFamily("archomata_exports_running",
                                    "Audit exports this instance is streaming")
        slots = self.app.get(keys.EXPORTS)
        if slots is not None:
            exports.add_metric([], slots.running)
        yield size
        yield free
        yield exports


MAX_CACHED_CHILDREN = 4096


class Metrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("archomata_http_requests", "HTTP requests served",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("archomata_http_request_duration_seconds",
                                 "Time to answer a request", ["method", "route"],
                                 registry=self.registry)
        self.ratelimit_fallback = Counter(
            "archomata_ratelimit_fallback", "Rate-limit checks served from memory while "
            "Redis was unreachable", registry=self.registry)
        self.mail_failures = Counter(
            "archomata_mail_failures", "Mails not sent, by the stage that failed (build or "
            "send); the request that sent them had committed", ["stage"],
            registry=self.registry)
        self.registry.register(_PoolCollector(app))
        # The labelled children, found once: `labels()` takes a lock and checks its
        # arguments every call. Bounded: route templates, methods and statuses are few.
        self._served: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def served(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._served.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)),
                        self.latency.labels(method, route))
            if len(self._served) < MAX_CACHED_CHILDREN:  # methods are the client's to choose
                self._served[key] = children
        children[0].inc()
        children[1].observe(seconds)


# This component's app key: beside its class, not in archomata.keys (which says why).
METRICS = web.AppKey("metrics", Metrics)


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
