"""Shared plumbing for the benchmarks: throwaway servers, the service as a subprocess,
load from wrk (or a Python fallback), and figures as medians over rounds.

This machine is shared and noisy: every script measures the service beside a reference
in the same run, alternating rounds, and reports medians and ratios.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from archomata.audit import AuditContext
from archomata.db import create_pool
from archomata.identity.onboarding import NewAccount, create_user_with_org
from archomata.identity.passwords import hash_sync
from archomata.ops.devservers import (
    PostgresServer,
    RedisServer,
    create_database,
    free_port,
    new_password,
    stop_process,
)
from archomata.ops.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Stack:
    environ: dict[str, str]
    owner_url: str
    workdir: Path


@contextmanager
def stack(bcrypt_rounds: int = 12, **extra: str) -> Iterator[Stack]:
    """Throwaway PostgreSQL + Redis, migrated, and the environment for `archomata serve`."""
    workdir = Path(tempfile.mkdtemp(prefix="archomata-bench-"))
    workdir.chmod(0o755)
    postgres = PostgresServer(workdir / "pg", free_port(), new_password(), durable=False)
    redis = RedisServer(workdir / "redis", free_port(), durable=False)
    postgres.start()
    redis.start()
    try:
        urls = asyncio.run(create_database(postgres, "bench", new_password(), new_password()))
        asyncio.run(migrate(urls.owner, urls.runtime))
        # In os.environ too: a bench that writes audit entries in its own process (its
        # set-up) keys them as the service does (archomata.audit.keyed).
        os.environ.setdefault("ARCHOMATA_AUDIT_KEY",
                              base64.b64encode(secrets.token_bytes(32)).decode())
        environ = {
            **os.environ,
            "ARCHOMATA_ENV": "production",
            "ARCHOMATA_DATABASE_URL": urls.runtime,
            "ARCHOMATA_DATABASE_OWNER_URL": urls.owner,
            "ARCHOMATA_REDIS_URL": redis.url,
            "ARCHOMATA_JWT_SECRETS": f"bench:{secrets.token_urlsafe(40)}",
            "ARCHOMATA_DATA_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "ARCHOMATA_BCRYPT_ROUNDS": str(bcrypt_rounds),
            "ARCHOMATA_SMTP_URL": "smtp://127.0.0.1:9",
            "ARCHOMATA_RATE_LIMIT_LOGIN": "1000000/60",
            "ARCHOMATA_RATE_LIMIT_API": "100000000/60",
            "ARCHOMATA_RATE_LIMIT_BRIDGE": "100000000/60",
            "ARCHOMATA_LOGIN_BACKOFF_AFTER": "1000",
            **extra,
        }
        yield Stack(environ, urls.owner, workdir)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def process(argv: list[str], environ: dict[str, str], port: int,
            log: Path) -> Iterator[str]:
    """Runs a server process until the block ends; yields its base URL once it answers."""
    with spawned(argv, environ, port, log) as (url, _):
        yield url


@contextmanager
def spawned(argv: list[str], environ: dict[str, str], port: int,
            log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`process`, yielding the process too (its pid: bench/workers.py reads its CPU time)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env={**environ, "ARCHOMATA_PORT": str(port)},
                                stdout=out, stderr=out, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, log)
        yield url, proc
    finally:
        stop_process(proc)


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{url}/health/live") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        if asyncio.run(probe()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def serve(environ: dict[str, str], workdir: Path, name: str = "service") -> Iterator[str]:
    port = free_port()
    return process([sys.executable, "-m", "archomata", "serve"], environ, port,
                   workdir / f"{name}.log")


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0  # answered in all


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_ERRORS = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, *, connections: int = 64, seconds: int = 10, threads: int = 2,
        headers: dict[str, str] | None = None, script: Path | None = None) -> Load:
    """Runs wrk against `url` and reads its figures (requires `wrk` on PATH: Debian's
    package `wrk`)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (Debian) or brew")
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    with tempfile.TemporaryDirectory(prefix="archomata-wrk-") as folder:
        if headers:
            # In a script, not `-H` on wrk's command line: a bearer token there is in
            # every local user's `ps`.
            lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n"
                     for k, v in headers.items()]
            if script is not None:
                lines.append(f"dofile({json.dumps(str(script.resolve()))})\n")
            script = Path(folder) / "headers.lua"
            script.write_text("".join(lines))
        if script is not None:
            argv += ["-s", str(script)]
        out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    latencies = {m[0]: float(m[1]) * _UNIT[m[2]] for m in _LATENCY.findall(out)}
    errors = _ERRORS.search(out)
    return Load(float(_RPS.search(out).group(1)),  # type: ignore[union-attr]
                latencies["50"], latencies["99"], int(errors.group(1)) if errors else 0,
                int(_REQUESTS.search(out).group(1)))  # type: ignore[union-attr]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_line(label: str, service: float, reference: float, target: str) -> str:
    return f"{label}: service {service:,.1f} / reference {reference:,.1f} = " \
           f"{service / reference:.2f}x (target {target})"


async def bench_admin(database_url: str, email: str, password: str) -> NewAccount:
    """The benchmark's org and its administrator (bcrypt cost 4: set-up, not measured)."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        return await create_user_with_org(
            pool, AuditContext.system(), email=email, name="Admin",
            password_hash=hash_sync(password, 4), org_name="Bench Org", verified=True)
    finally:
        await pool.close()
