"""Raw HTTP clients that read as little as a test wants: the answer's head, then nothing.

The socket's receive buffer and the stream's limit are tiny, so a client that stops
reading stops the server's writes after a few kilobytes past the server's own buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

HEAD_END = b"\r\n\r\n"
WAIT_SECONDS = 10.0  # for what should come at once: a hang fails, never blocks the run


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def head(self) -> tuple[int, dict[str, str]]:
        """The status and headers of the answer (and no byte of its body)."""
        raw = await asyncio.wait_for(self.reader.readuntil(HEAD_END), WAIT_SECONDS)
        status_line, *lines = raw[:-len(HEAD_END)].decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split(" ")[1]), headers

    async def body(self, headers: dict[str, str]) -> bytes:
        """The rest of an answer of known length."""
        return await asyncio.wait_for(
            self.reader.readexactly(int(headers["content-length"])), WAIT_SECONDS)

    async def until_cut(self) -> bytes:
        """Everything until the server ends the connection (a reset counts as an end)."""
        received = b""
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(WAIT_SECONDS):
                while chunk := await self.reader.read(2**16):
                    received += chunk
        return received

    def close(self) -> None:
        self.writer.transport.abort()


async def request(port: int, path: str, headers: dict[str, str] | None = None) -> RawClient:
    """Sends `GET path` and reads nothing yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    lines = [f"GET {path} HTTP/1.1", "Host: localhost",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return RawClient(reader, writer)
