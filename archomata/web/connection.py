"""A connection's end: what the server's stall cut-off (archomata.http.server) and a
stream that stops short (the audit export) both do to a client's connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


def cut(transport: asyncio.BaseTransport) -> None:
    """Ends a connection at once, unsent bytes dropped: a reset, not a close. A plain
    close (asyncio's abort too) leaves the kernel delivering its send queue, megabytes,
    for as long as the client cares to take it, and the client a file that looks whole."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]  # every stream transport has it
