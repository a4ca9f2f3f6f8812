"""`archomata serve --workers N`: N processes serving one port, and a parent minding them.

Each worker is an ordinary `archomata serve` whose listener sets SO_REUSEPORT, so the
kernel spreads new connections across them (ARCHOMATA_WORKER_OF names the parent). All
they share already lives in PostgreSQL and Redis. The parent serves nothing: it starts the
workers, starts a new one when one dies (a short pause when they keep dying at once, so a
broken configuration does not spin), and on SIGTERM or SIGINT passes SIGTERM on, waits
for each to shut down gracefully, and exits 0 when every one did. Metrics are summed
across the workers by prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a
folder of the parent's making unless the operator names one).

The instance settings are the instance's, whatever N (the contract's "instance
settings"): each worker learns its slot (ARCHOMATA_WORKER_SLOT of ARCHOMATA_WORKER_COUNT)
and serves with its share of the database pool, the bcrypt threads and queue, the audit
export slots, and the in-memory stand-ins for Redis's limits (`worker_config`), at least
1 of each, and says so in one log line at start. A worker started in a dead one's place
takes its slot, and its share.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from archomata.config import Config, ConfigError, WorkerSlot

log = logging.getLogger(__name__)

WORKER_OF = "ARCHOMATA_WORKER_OF"
WORKER_SLOT = "ARCHOMATA_WORKER_SLOT"
WORKER_COUNT = "ARCHOMATA_WORKER_COUNT"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
MAX_WORKERS = 64
QUICK_DEATH_SECONDS = 5.0  # a worker that dies sooner than this after starting...
RESPAWN_PAUSE_SECONDS = 1.0  # ...is started again only after this pause
POLL_SECONDS = 0.2


def worker_count(text: str) -> int:
    """`auto` (the machine's cores) or a number from 1 to MAX_WORKERS; ValueError else."""
    if text == "auto":
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"--workers takes `auto` or a number from 1 to {MAX_WORKERS}")
    return int(text)


def is_worker() -> bool:
    return bool(os.environ.get(WORKER_OF))


def parent_gone() -> bool:
    """A worker whose parent died (it is re-parented): it stops, rather than serve on
    unminded."""
    expected = os.environ.get(WORKER_OF)
    return bool(expected) and str(os.getppid()) != expected


def this_worker() -> WorkerSlot:
    """This worker's slot, as its parent named it (ConfigError if it did not)."""
    try:
        index, count = int(os.environ[WORKER_SLOT]), int(os.environ[WORKER_COUNT])
    except (KeyError, ValueError):
        index, count = -1, 0
    if not 0 <= index < count <= MAX_WORKERS:
        raise ConfigError(f"a worker (with {WORKER_OF}) needs {WORKER_SLOT} below "
                          f"{WORKER_COUNT}: start workers with `serve --workers N`")
    return WorkerSlot(index, count)


def worker_config(config: Config, slot: WorkerSlot) -> Config:
    """`config` with the instance settings divided: this worker's share of each (the
    limits kept in Redis are shared by every process already and stay whole; their
    in-memory stand-ins take `config.worker.share` where they are built, in app.py)."""
    pool_max = slot.share(config.db_pool_max)
    return dataclasses.replace(
        config, worker=slot, db_pool_max=pool_max,
        # A worker may keep no idle connection (0), never more than its maximum.
        db_pool_min=min(pool_max, slot.share(config.db_pool_min, floor=0)),
        bcrypt_threads=slot.share(config.bcrypt_threads),
        # The queue bounds the wait behind the threads: it shrinks with them.
        bcrypt_queue=slot.share(config.bcrypt_queue),
        exports_per_instance=slot.share(config.exports_per_instance))


def log_share(whole: Config, mine: Config) -> None:
    """One line per worker at start: what it got of each instance setting."""
    slot = mine.worker
    limits = {name: f"{slot.share(limit.limit)}/{limit.window_seconds}" for name, limit in (
        ("login", whole.rate_limit_login), ("bridge", whole.rate_limit_bridge),
        ("api", whole.rate_limit_api))}
    log.info("worker share", extra={
        "worker": slot.index, "workers": slot.count,
        "db_pool_min": mine.db_pool_min, "db_pool_max": mine.db_pool_max,
        "bcrypt_threads": mine.bcrypt_threads, "bcrypt_queue": mine.bcrypt_queue,
        "exports_per_instance": mine.exports_per_instance,
        "rate_limits_in_memory": limits,
        "login_backoff_after_in_memory": slot.share(whole.login_backoff_after)})


def over_shared(config: Config, count: int,
                environ: Mapping[str, str] = os.environ) -> list[str]:
    """The settings smaller than the worker count: each worker still gets 1, so the
    instance uses more than the setting says. The bcrypt threads only when set: their
    default (cores - 1) is below `--workers auto` by design, and 1 each is what it means
    then."""
    settings = {"ARCHOMATA_DB_POOL_MAX": config.db_pool_max,
                "ARCHOMATA_BCRYPT_THREADS": config.bcrypt_threads,
                "ARCHOMATA_BCRYPT_QUEUE": config.bcrypt_queue,
                "ARCHOMATA_EXPORTS_PER_INSTANCE": config.exports_per_instance}
    if not environ.get("ARCHOMATA_BCRYPT_THREADS", "").strip():
        del settings["ARCHOMATA_BCRYPT_THREADS"]
    return [f"{name}={value}" for name, value in settings.items() if value < count]


class Supervisor:
    def __init__(self, count: int, grace_seconds: float) -> None:
        self.count = count
        self.grace_seconds = grace_seconds
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False
        self._made_dir: Path | None = None
        self._env: dict[str, str] = {}

    def run(self) -> int:
        env = {**os.environ, WORKER_OF: str(os.getpid())}
        if not env.get(MULTIPROC_DIR):
            self._made_dir = Path(tempfile.mkdtemp(prefix="archomata-metrics-"))
            env[MULTIPROC_DIR] = str(self._made_dir)
        self._env = env
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            for slot in range(self.count):
                self._start(slot)
            while not self.stopping:
                time.sleep(POLL_SECONDS)
                self._replace_the_dead()
            return self._stop_all()
        finally:
            if self._made_dir is not None:
                shutil.rmtree(self._made_dir, ignore_errors=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _start(self, slot: int) -> None:
        process = subprocess.Popen([sys.executable, "-m", "archomata", "serve"], env={
            **self._env, WORKER_SLOT: str(slot), WORKER_COUNT: str(self.count)})
        self.workers[slot] = (process, time.monotonic())
        log.info("worker started", extra={"worker": slot, "pid": process.pid})

    def _replace_the_dead(self) -> None:
        for slot, (process, started) in list(self.workers.items()):
            code = process.poll()
            if code is None or self.stopping:
                continue
            self._forget(process)
            log.warning("worker exited; starting another",
                        extra={"worker": slot, "pid": process.pid, "exit_code": code})
            if time.monotonic() - started < QUICK_DEATH_SECONDS:
                time.sleep(RESPAWN_PAUSE_SECONDS)
            if not self.stopping:
                self._start(slot)

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        """Its live gauges leave the sums; its counters stay in them."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            process.pid, self._env[MULTIPROC_DIR])

    def _stop_all(self) -> int:
        log.info("stopping the workers", extra={"grace_seconds": self.grace_seconds})
        for process, _ in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds + 10
        codes = []
        for process, _ in self.workers.values():
            try:
                codes.append(process.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
            self._forget(process)
        # A worker still starting when SIGTERM came ends by it, before it serves anything.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
