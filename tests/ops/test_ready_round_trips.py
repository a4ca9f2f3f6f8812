"""/health/ready asks PostgreSQL and Redis once each: counted on the wire.

The service reaches both through a loopback proxy of this test's that reads what the
client sends: PostgreSQL's frontend messages (each Sync or simple Query is one round
trip: the client waits for the server's ReadyForQuery), and Redis's commands (each one
round trip, as nothing here pipelines). The pub/sub listener's own Redis connection is
left out: it only waits for messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from archomata.app import create_app
from archomata.config import Config, Secret
from archomata.ops.devservers import free_port

PROBES = 3


@dataclasses.dataclass
class Wire:
    """What the clients sent through one proxy: (connection number, message) in order."""

    seen: list[tuple[int, str]] = dataclasses.field(default_factory=list)

    def since(self, mark: int, *, skip: frozenset[int] = frozenset()) -> list[str]:
        return [message for conn, message in self.seen[mark:] if conn not in skip]


class _Postgres:
    """Frontend messages by type letter; the first (untyped) one is the startup packet."""

    def __init__(self) -> None:
        self.buffer, self.started = b"", False

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        found = []
        while True:
            head = 4 if not self.started else 5
            if len(self.buffer) < head:
                return found
            if not self.started:
                size = struct.unpack("!I", self.buffer[:4])[0]
                kind = "startup"
            else:
                kind = chr(self.buffer[0])
                size = struct.unpack("!I", self.buffer[1:5])[0] + 1
            if len(self.buffer) < size:
                return found
            self.buffer = self.buffer[size:]
            self.started = True
            found.append(kind)


class _Redis:
    """Commands by name, from RESP arrays of bulk strings (what redis-py sends)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self.buffer += data
        found = []
        while True:
            parsed = self._command()
            if parsed is None:
                return found
            found.append(parsed)

    def _command(self) -> str | None:
        lines = self.buffer.split(b"\r\n")
        if len(lines) < 2:
            return None
        assert lines[0].startswith(b"*"), "redis-py sends arrays"
        count, at, words = int(lines[0][1:]), 1, []
        for _ in range(count):
            if at + 1 >= len(lines):
                return None
            words.append(lines[at + 1])
            at += 2
        if at >= len(lines):
            return None
        self.buffer = b"\r\n".join(lines[at:])
        return words[0].decode().upper()


@contextlib.asynccontextmanager
async def proxy(port: int, parser: type[_Postgres] | type[_Redis]) -> AsyncIterator[
        tuple[int, Wire]]:
    wire, numbers = Wire(), iter(range(1_000_000))

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   conn: int | None, parse: Any) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if parse is not None:
                    wire.seen.extend((conn, m) for m in parse.feed(data))
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        conn = next(numbers)
        await asyncio.gather(pipe(reader, up_writer, conn, parser()),
                             pipe(up_reader, writer, None, None))

    listen = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    try:
        yield listen, wire
    finally:
        server.close()


def _through(url: str, port: int, query: str = "") -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query or parts.query))


async def test_readiness_asks_postgres_once_and_redis_once(
        aiohttp_client: Any, config: Config) -> None:
    if config.database_pooler:
        pytest.skip("through PgBouncer each statement is parsed again: one more round trip")
    database, redis = config.database_url.reveal(), config.redis_url.reveal()
    async with proxy(urlsplit(database).port or 5432, _Postgres) as (pg_port, postgres), \
            proxy(urlsplit(redis).port or 6379, _Redis) as (redis_port, commands):
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, db_pool_min=1, db_pool_max=1,  # the connection start-up used
            database_url=Secret(_through(database, pg_port, "sslmode=disable")),
            redis_url=Secret(_through(redis, redis_port)))))
        assert (await client.get("/health/ready")).status == 200  # Redis's connection made
        for _ in range(PROBES):
            pg_mark, redis_mark = len(postgres.seen), len(commands.seen)
            response = await client.get("/health/ready")
            assert response.status == 200
            assert (await response.json())["checks"] == {
                "postgres": "ok", "redis": "ok", "schema": "ok"}
            listeners = frozenset(c for c, m in commands.seen if m in {"SUBSCRIBE", "PSUBSCRIBE"})
            round_trips = [m for m in postgres.since(pg_mark) if m in {"S", "Q"}]
            assert round_trips == ["S"], postgres.since(pg_mark)
            assert commands.since(redis_mark, skip=listeners) == ["PING"]
