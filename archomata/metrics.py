"""Prometheus metrics, in a registry of the app's own (so two apps in one process, as in
the tests, never share counters).

Under `serve --workers N` (PROMETHEUS_MULTIPROC_DIR set, see ops/workers.py) every worker
writes its figures to files there and `/metrics`, whichever worker answers, sums them
all (prometheus-client's multiprocess mode); the pool gauges are then written each second
by each worker and summed over the live ones. The process collector's figures (memory,
CPU, file descriptors) and the garbage collector's are a process's own: under workers
each worker writes its own each second, labelled by its `pid` and dropped when it dies
(multiprocess mode `liveall`), so one scrape shows every worker, not whichever answered.

Labels stay bounded: every label value comes from a fixed set (the tuples below; another
value is counted as `other`), never a user, org, account or login. No `_created` series.

The bridge queue's gauges are read at scrape time with one query (`at_scrape`), not in
the requests' path; /health/live never touches any of this but `served`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

import asyncpg
from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from archomata import keys

log = logging.getLogger("archomata.metrics")
# A `_created` series per counter doubles the series for no alert anyone writes.
disable_created_metrics()  # type: ignore[no-untyped-call]

# The label values, each a fixed set (the README's and docs/deployment.md's table).
LOGIN_OUTCOMES = (
    "success", "second_factor_required", "throttled", "unknown_email", "bad_password",
    "user_disabled", "email_not_verified", "not_a_member", "org_disabled",
    "every_org_disabled", "credentials_changed", "membership_revoked", "other")
SECOND_FACTOR_OUTCOMES = ("right", "wrong", "expired", "throttled", "refused", "other")
RATE_LIMIT_BUCKETS = (
    "login", "refresh", "bridge", "api",  # the per-client-IP limits, by route class
    "login_backoff", "second_factor", "session_family", "agent_key", "audit_search",
    "audit_export", "other")
# Read at scrape time: the bridge queue by state, and its oldest waiting command's age.
BRIDGE_STATES = ("waiting", "leased", "expired")
SCRAPE_READ_SECONDS = 2.0
ScrapeReader = Callable[[], Awaitable[Iterable[GaugeMetricFamily]]]

GAUGES = {
    "archomata_db_pool_size": "Connections open in the pool",
    "archomata_db_pool_free": "Idle connections in the pool",
    "archomata_exports_running": "Audit exports this instance is streaming",
    "archomata_bridge_agents_online": "Agents with a long poll waiting on this instance",
}
MULTIPROCESS_GAUGE_SECONDS = 1.0


def _gauge_values(app: web.Application) -> dict[str, float | None]:
    """The pool's connections, and the audit exports that share it (audit/export_slots.py)."""
    pool: asyncpg.Pool | None = app.get(keys.DB_POOL)
    slots = app.get(keys.EXPORTS)
    broadcast = app.get(keys.BROADCAST)
    return {"archomata_db_pool_size": pool.get_size() if pool else None,
            "archomata_db_pool_free": pool.get_idle_size() if pool else None,
            "archomata_exports_running": slots.running if slots else None,
            "archomata_bridge_agents_online":
                broadcast.polls.agents_waiting() if broadcast else None}


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
        self.logins = FixedLabel(Counter(
            "archomata_logins", "Password sign-ins (/api/v1/auth/login) by outcome", ["outcome"],
            registry=self.registry), LOGIN_OUTCOMES)
        self.second_factor_answers = FixedLabel(Counter(
            "archomata_second_factor_answers", "Second-factor answers (/api/v1/auth/mfa/verify, "
            "/api/v1/auth/step-up) by outcome", ["outcome"], registry=self.registry),
            SECOND_FACTOR_OUTCOMES)
        self.ratelimit_refusals = FixedLabel(Counter(
            "archomata_ratelimit_refusals", "Requests refused 429 by a rate limit or "
            "backoff, by bucket", ["bucket"], registry=self.registry), RATE_LIMIT_BUCKETS)
        self.refresh_reuse = Counter(
            "archomata_refresh_reuse_detected", "Session families ended because a refresh "
            "token was replayed (a stolen cookie, or a client bug)", registry=self.registry)
        self.commands_leased = Counter(
            "archomata_bridge_commands_leased", "Bridge commands handed out to an agent's "
            "poll (each attempt)", registry=self.registry)
        self.leases_expired = Counter(
            "archomata_bridge_leases_expired", "Bridge commands handed out again because "
            "their lease ran out with no result", registry=self.registry)
        # Async readers run by /metrics itself (the bridge queue: one query per scrape).
        self.at_scrape: list[ScrapeReader] = []
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        if self.multiprocess_dir is None:
            self.registry.register(_PoolCollector(app))
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        else:
            self._gauges = {name: Gauge(name, text, multiprocess_mode="livesum",
                                        registry=None) for name, text in GAUGES.items()}
            self._own: dict[str, Gauge] = {}
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
        """What /metrics reports: this app's registry, or every worker's figures summed
        (the platform's, the same for all, from the one answering)."""
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            registry, self.multiprocess_dir)
        registry.register(PLATFORM_COLLECTOR)
        return registry

    async def text(self) -> bytes:
        """The /metrics body: the registry's, then what the scrape-time readers find. A
        reader that fails or takes too long leaves its families out (and is logged): the
        scrape still answers, and an `absent()` alert sees the gap."""
        families: list[GaugeMetricFamily] = []
        for read in self.at_scrape:
            try:
                async with asyncio.timeout(SCRAPE_READ_SECONDS):
                    families.extend(await read())
            except Exception as exc:
                log.warning("a metric could not be read", extra={"error": type(exc).__name__})
        return generate_latest(self.exposition()) + generate_latest(_Families(families))

    async def write_gauges(self) -> None:
        """Under workers: this worker's pool gauges, to the shared files, every second."""
        while self.multiprocess_dir is not None:
            for name, value in _gauge_values(self.app).items():
                self._gauges[name].set(value or 0)
            self._write_own()
            await asyncio.sleep(MULTIPROCESS_GAUGE_SECONDS)

    def _write_own(self) -> None:
        """This worker's process and GC figures, as gauges of the same names, one series
        per live worker (`pid`): summing memory over workers would hide the one leaking."""
        for collector in (PROCESS_COLLECTOR, GC_COLLECTOR):
            for family in collector.collect():
                for sample in family.samples:
                    gauge = self._own.get(sample.name)
                    if gauge is None:
                        gauge = self._own[sample.name] = Gauge(
                            sample.name, family.documentation, sorted(sample.labels),
                            multiprocess_mode="liveall", registry=None)
                    labelled = gauge.labels(**sample.labels) if sample.labels else gauge
                    labelled.set(sample.value)


def bridge_queue(read: Callable[[], Awaitable[dict[str, float]]]) -> ScrapeReader:
    """The scrape-time reader of the bridge queue's gauges, from `read`'s figures
    (archomata.bridge.service.queue_figures)."""
    async def families() -> list[GaugeMetricFamily]:
        figures = await read()
        commands = GaugeMetricFamily(
            "archomata_bridge_commands", "Bridge commands by state: waiting for a poll, "
            "leased to one, or leased with the lease run out and no result", labels=["state"])
        for state in BRIDGE_STATES:
            commands.add_metric([state], figures[state])
        oldest = GaugeMetricFamily(
            "archomata_bridge_oldest_waiting_seconds",
            "Age of the oldest command no agent has leased yet (0: none waits)",
            value=figures["oldest_waiting_seconds"])
        return [commands, oldest]
    return families


class _Families(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self.families


class FixedLabel:
    """A labelled counter whose one label takes a value of `allowed` (else `other`), each
    child made at start: a rate is there from the first scrape, at 0."""

    def __init__(self, counter: Counter, allowed: tuple[str, ...]) -> None:
        self.counter = counter
        self.children = {value: counter.labels(value) for value in allowed}

    def __call__(self, value: str) -> None:
        self.children.get(value, self.children["other"]).inc()


async def worker_gauges(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context for the pool gauges of a worker (nothing otherwise)."""
    task = asyncio.create_task(app[METRICS].write_gauges(), name="archomata-gauges")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# This component's app key: beside its class, not in archomata.keys (which says why).
METRICS = web.AppKey("metrics", Metrics)
