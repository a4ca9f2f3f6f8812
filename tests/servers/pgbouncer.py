"""A local PgBouncer in transaction mode in front of a PostgreSQL server, for the tests
that run the service behind it (`ARCHOMATA_DATABASE_POOLER=pgbouncer`).

Debian's `pgbouncer` (installed by .ci/install-pgbouncer where root can), run as the
servers' user like PostgreSQL and Redis (archomata/ops/devroot.py). Each client
transaction gets whichever server connection is free: nothing may be kept on a
connection between transactions (no named prepared statements, no session settings).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from archomata.ops.devroot import DevServerError, data_dir, open_log, server_user, write_secret
from archomata.ops.devservers import stop_process, wait_for_port

DEBIAN_BINARY = Path("/usr/sbin/pgbouncer")


def pgbouncer_binary() -> Path | None:
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    return DEBIAN_BINARY if DEBIAN_BINARY.exists() else None


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@dataclass
class PgBouncerServer:
    data_dir: Path
    port: int
    upstream_port: int
    # role -> password, for PgBouncer to check clients and to sign in to PostgreSQL.
    users: Mapping[str, str]
    pool_size: int = 20
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def through(self, dsn: str) -> str:
        """`dsn`, sent to this PgBouncer instead of PostgreSQL."""
        parts = urlsplit(dsn)
        userinfo = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{self.port}"))

    def start(self) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise DevServerError("no pgbouncer binary (Debian's package: .ci/install-pgbouncer)")
        user = server_user()
        home = data_dir(self.data_dir, user)
        write_secret(home / "userlist.txt", "".join(
            f"{_quoted(role)} {_quoted(password)}\n" for role, password in self.users.items()),
            user)
        ini = home / "pgbouncer.ini"
        write_secret(ini, "\n".join([
            "[databases]", f"* = host=127.0.0.1 port={self.upstream_port}", "",
            "[pgbouncer]", "listen_addr = 127.0.0.1", f"listen_port = {self.port}",
            "unix_socket_dir =", "auth_type = scram-sha-256",
            f"auth_file = {home / 'userlist.txt'}", "pool_mode = transaction",
            "max_client_conn = 2000", f"default_pool_size = {self.pool_size}",
            "ignore_startup_parameters = extra_float_digits,options",
            f"logfile = {home / 'pgbouncer.log'}", f"pidfile = {home / 'pgbouncer.pid'}",
            ""]), user)
        log = open_log(home / "pgbouncer.out")
        try:
            self.proc = subprocess.Popen(
                [str(binary), str(ini)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                cwd=home, **(user.popen() if user else {}))
        finally:
            os.close(log)
        try:
            wait_for_port(self.port, self.proc, "PgBouncer", home / "pgbouncer.log")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
