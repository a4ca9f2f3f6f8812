"""Prometheus metrics, in a registry of the app's own (so two apps in one process, as in
the tests, never share counters).

Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set, see ops/workers.py) every worker
writes its figures to files there and `/metrics`, whichever worker answers, sums them
all (prometheus-client's multiprocess mode); the pool gauges are then written each second
by each worker and summed over the live ones."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from archomata import keys

GAUGES = {
    "archomata_db_pool_size": "Connections open in the pool",
    "archomata_db_pool_free": "Idle connections in the pool",
    "archomata_exports_running": "Audit exports this instance is streaming",
}
MULTIPROCESS_GAUGE_SECONDS = 1.0


def _gauge_values(app: web.Application) -> dict[str, float | None]:
    """The pool's connections, and the audit exports that share it (audit/export_slots.py)."""
    pool: asyncpg.Pool | None = app.get(keys.DB_POOL)
    slots = app.get(keys.EXPORTS)
    return {"archomata_db_pool_size": pool.get_size() if pool else None,
            "archomata_db_pool_free": pool.get_idle_size() if pool else None,
            "archomata_exports_running": slots.running if slots else None}


class _PoolCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, value in _gauge_values(self.app).items():
            family = GaugeMetricFamily(name, GAUGES[name])
            if value is not None:
                family.add_metric([], value)
            yield family


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
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess_dir is None:
            self.registry.register(_PoolCollector(app))
        else:
            self._gauges = {name: Gauge(name, text, multiprocess_mode="livesum",
                                        registry=None) for name, text in GAUGES.items()}
        self.app = app
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


    def exposition(self) -> CollectorRegistry:
        """What /metrics reports: this app's registry, or every worker's figures summed."""
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, self.multiprocess_dir)
        return registry

    async def write_gauges(self) -> None:
        """Under workers: this worker's pool gauges, to the shared files, every second."""
        while self.multiprocess_dir is not None:
            for name, value in _gauge_values(self.app).items():
                self._gauges[name].set(value or 0)
            await asyncio.sleep(MULTIPROCESS_GAUGE_SECONDS)


async def worker_gauges(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context for the pool gauges of a worker (nothing otherwise)."""
    task = asyncio.create_task(app[METRICS].write_gauges(), name="archomata-gauges")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# This component's app key: beside its class, not in archomata.keys (which says why).
METRICS = web.AppKey("metrics", Metrics)
