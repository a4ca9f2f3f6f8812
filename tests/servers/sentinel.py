"""A Redis master, one replica of it and a Sentinel watching them, for the failover tests
(tests/ops/test_sentinel.py, tests/identity/test_durable_sessions.py): the service's
`redis+sentinel://` URLs against real servers. redis-server in Sentinel mode, no other
binary; run as the servers' user like the package's own local servers."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from archomata.ops.devroot import (
    DevServerError,
    data_dir,
    open_log,
    runnable_bin_dir,
    server_user,
    write_secret,
)
from archomata.ops.devservers import (
    RedisServer,
    free_port,
    redis_binary,
    stop_process,
    wait_for_port,
)

SENTINEL_SERVICE = "archomata"


@dataclass
class SentinelGroup:
    """A Redis master, one replica of it and a Sentinel watching them (redis-server in
    Sentinel mode: no other binary), for the failover tests. One Sentinel is quorum."""

    data_dir: Path
    master: RedisServer | None = field(default=None, repr=False)
    replica: RedisServer | None = field(default=None, repr=False)
    sentinel_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SENTINEL_SERVICE}/0"

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()  # nothing started is left running
            raise

    def _start(self) -> None:
        master_port = free_port()
        self.master = RedisServer(self.data_dir / "master", master_port, durable=False)
        self.master.start()
        self.replica = RedisServer(self.data_dir / "replica", free_port(), durable=False,
                                   options=("--replicaof", "127.0.0.1", str(master_port)))
        self.replica.start()
        user = server_user()
        binary = redis_binary()
        binary = runnable_bin_dir(binary.parent, binary.name, user) / binary.name
        home = data_dir(self.data_dir / "sentinel", user)
        conf = home / "sentinel.conf"  # Sentinel rewrites it: its user's to write
        write_secret(conf, "\n".join([
            f"port {self.sentinel_port}", "bind 127.0.0.1", f"dir {home}",
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 1",
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000",
            f"sentinel failover-timeout {SENTINEL_SERVICE} 10000", ""]), user)
        log = open_log(home / "sentinel.log")
        try:
            self.proc = subprocess.Popen(
                [str(binary), str(conf), "--sentinel"], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, cwd=home, **(user.popen() if user else {}))
        finally:
            os.close(log)
        wait_for_port(self.sentinel_port, self.proc, "Redis Sentinel", home / "sentinel.log")
        self._until_replicated()

    def _until_replicated(self) -> None:
        """Until Sentinel knows the replica and the replica has the master's data: only
        then can a failover promote it."""
        import redis

        deadline = time.monotonic() + 30
        with redis.Redis(port=self.sentinel_port) as sentinel:
            while time.monotonic() < deadline:
                replicas = sentinel.sentinel_slaves(SENTINEL_SERVICE)
                if any(r.get("master-link-status") == "ok" for r in replicas):
                    return
                time.sleep(0.2)
        raise DevServerError("Sentinel did not see the replica in sync within 30 s")

    def master_port(self) -> int | None:
        """The port of the master Sentinel names now."""
        import redis

        with redis.Redis(port=self.sentinel_port) as sentinel:
            found = sentinel.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        return int(found[1]) if found else None

    def kill_master(self) -> None:
        """SIGKILL: no goodbye to the replica or the clients."""
        for server in (self.master, self.replica):
            if server and server.proc and server.port == self.master_port():
                server.proc.kill()
                server.proc.wait()
                server.proc = None

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        for server in (self.master, self.replica):
            if server:
                server.stop()
