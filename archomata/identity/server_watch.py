"""Which Redis server the app's connections reach, checked on every new connection.

A Redis restarted from an older snapshot, or a replica promoted after its master died,
answers with the rebuilt marker (`rv:ready`) of before, but without the writes it lost:
a logout, a new login, a rotation. Each Redis process has its own `run_id`; a connection
that finds another one than the last seen deletes the marker there, before its first
command is sent, and marks it stale (`rv:stale`), so the state is rebuilt from
PostgreSQL (revocation.py), ended families included, before any token is judged against
what that server holds. One `INFO server` per new connection; none on
the pooled connections of the steady state.
"""

from __future__ import annotations

import logging

from redis.asyncio.connection import AbstractConnection

log = logging.getLogger(__name__)


def run_id_of(info: bytes | str) -> str:
    """The `run_id` field of an `INFO server` answer ('' when there is none)."""
    text = info.decode() if isinstance(info, bytes) else info
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "run_id":
            return value.strip()
    return ""


class ServerWatch:
    """The server's identity as the app's Redis client last found it. `connected` is the
    client's `redis_connect_func`: the usual handshake, then `INFO server`."""

    def __init__(self, ready_key: str, stale_key: str) -> None:
        self.ready_key, self.stale_key = ready_key, stale_key
        self.run_id: str | None = None  # None: no connection yet, whatever it finds is it

    async def connected(self, connection: AbstractConnection) -> None:
        await connection.on_connect()
        await connection.send_command("INFO", "server")
        run_id = run_id_of(await connection.read_response())
        if self.run_id is not None and run_id != self.run_id:
            # Another server, maybe without writes the last one had: it is rebuilt first,
            # and wholly (the stale mark: ended families are ended there too).
            for command in (("INCR", self.stale_key), ("DEL", self.ready_key)):
                await connection.send_command(*command)
                await connection.read_response()
            log.warning("redis is another server now: its revocation state is rebuilt",
                        extra={"run_id": run_id, "previous_run_id": self.run_id})
        self.run_id = run_id
