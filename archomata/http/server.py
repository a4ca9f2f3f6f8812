"""How the service listens: TLS 1.3 only, bounded request heads, and no slow client holding
a connection. `serve` and the tests both start the service through `start` here.

- Request line and each header at most 8 KiB, at most 100 headers (400 beyond).
- A request head must be complete within ARCHOMATA_HEADER_TIMEOUT_SECONDS of its first
  byte, or the connection is closed (aiohttp has no such timeout: `HeadDeadlineHandler`).
  Against clients that trickle a header byte by byte to hold connections open.
- An idle keep-alive connection closes after ARCHOMATA_KEEPALIVE_TIMEOUT_SECONDS (default
  75 s: longer than the usual 60 s of a load balancer, so it never reuses a connection
  we just closed). A body is bounded by the request timeout (http/middlewares/timeout.py),
  an unread one by the lingering time.
- A response the client takes nothing of for ARCHOMATA_STREAM_STALL_SECONDS (default
  30 s) is cut: the connection is aborted, unsent bytes dropped. Against clients that
  open a stream (an audit export) or ask for a large answer and never read it, to hold
  what the response holds; the handler's next write fails, and it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import signal
import socket
import ssl
import struct
import termios
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from archomata.config import Config
from archomata.web.connection import cut

log = logging.getLogger(__name__)

MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100
LINGERING_SECONDS = 5.0
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)  # SIOCOUTQ on a socket


class PortInUseError(OSError):
    """The address to listen on is taken: said in one line, with how to pick another
    (`archomata` prints it, no traceback)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"port {port} on {host} is already in use (address already in use): stop "
            f"what listens there (another `make run`?), or pick another port with "
            f"ARCHOMATA_PORT, e.g. `ARCHOMATA_PORT={port + 1 if port < 65535 else 8081} "
            f"make run`")


def listen_hosts(host: str) -> tuple[str, ...]:
    """The addresses `host` is served on. `localhost` is both loopback addresses, ::1
    whenever the machine has it: a browser tries ::1 first for localhost whatever
    /etc/hosts says, and that file often names 127.0.0.1 alone."""
    if host != "localhost":
        return (host,)
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:  # no IPv6, or no ::1 on lo
        return ("127.0.0.1",)
    return ("127.0.0.1", "::1")


def ensure_free(host: str, port: int) -> None:
    """Raises PortInUseError when something listens on `host`:`port` (every address the
    host names), by binding as the server will (SO_REUSEADDR: a closing connection's
    TIME_WAIT does not count). Another process may still take the port afterwards:
    `start` says the same then."""
    try:
        addresses = [found for name in listen_hosts(host) for found in socket.getaddrinfo(
            name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)]
    except socket.gaierror:
        return  # a host that names nothing: the server's own start-up says so
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(host, port) from None
                raise


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, TLS 1.3 only; None when no certificate is configured."""
    if not config.tls_cert or not config.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def connection_settings(config: Config) -> dict[str, Any]:
    """What every connection is held to (aiohttp RequestHandler keyword arguments)."""
    return {
        "keepalive_timeout": config.keepalive_timeout_seconds,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGERING_SECONDS,
        "access_log": None,  # archomata.http.middlewares.access_log writes our own
    }


class ConnectionHandler(RequestHandler):
    """aiohttp's connection handler, closing a connection whose request head is not
    complete `head_timeout` seconds after its first byte arrived on an idle connection,
    aborting one whose client takes no byte of a response for `stall_timeout` seconds,
    and logging a malformed request without quoting it.

    Idle means every request parsed so far has been answered, so body bytes of a request
    in progress never start the clock. Relies on `_request_count`, which aiohttp's
    handler increments once per parsed request head (tests/http/test_server.py would notice
    a change).

    The stall clock runs while the transport has paused writing (its buffer is past the
    high-water mark: the client is not keeping up); any byte leaving the buffer restarts
    it, so a slow reader is never cut, one that reads nothing is.
    """

    __slots__ = ("_answered", "_conn", "_head_timeout", "_head_timer", "_progress_at",
                 "_stall_timeout", "_stall_timer", "_unsent")

    def __init__(self, manager: web.Server, *, head_timeout: float, stall_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered = 0
        self._stall_timeout = stall_timeout
        self._stall_timer: asyncio.TimerHandle | None = None
        # Our own reference: aiohttp drops its `transport` on close(), which for a paused
        # transport would wait for the client to read the rest; abort() must reach it.
        self._conn: asyncio.Transport | None = None
        self._unsent = 0
        self._progress_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._conn = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._unsent = self._buffered()
        self._progress_at = self._loop.time()
        self._watch_stall()

    def resume_writing(self) -> None:
        self._stop_stall_timer()
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        heads_before = self._request_count
        super().data_received(data)
        if self._request_count != heads_before:
            self._stop_head_timer()
        elif data and self._head_timer is None and self._answered == self._request_count:
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_too_slow)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        self._stop_stall_timer()
        self._conn = None
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            # The client's fault, and aiohttp's message quotes the raw bytes, which may be
            # a token or a cookie: one line without them.
            log.info("malformed request refused",
                     extra={"error": type(exc).__name__, "status": exc.code})
            return
        super().log_exception(*args, **kw)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        log.info("connection closed: request head too slow",
                 extra={"timeout_seconds": self._head_timeout})
        self.force_close()

    def _buffered(self) -> int:
        """Bytes of responses the client has not yet acknowledged: in the transport's
        buffer and, where the system tells (Linux), in the socket's send queue. A reader
        taking a few bytes frees the kernel's queue long before the kernel asks the
        transport for more, so the transport's buffer alone would miss its progress."""
        if self._conn is None:
            return 0
        unsent = self._conn.get_write_buffer_size()
        sock = self._conn.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            with contextlib.suppress(OSError, ValueError):
                unsent += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, bytes(4)))[0]
        return unsent

    def _watch_stall(self) -> None:
        # Checked a few times per period, so a cut comes at most a quarter period late.
        self._stall_timer = self._loop.call_later(min(1.0, self._stall_timeout / 4),
                                                  self._check_stall)

    def _stop_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _check_stall(self) -> None:
        self._stall_timer = None
        unsent, now = self._buffered(), self._loop.time()
        if unsent < self._unsent:
            self._unsent, self._progress_at = unsent, now
        elif now - self._progress_at >= self._stall_timeout:
            log.info("connection cut: the client took nothing of the response",
                     extra={"stall_seconds": self._stall_timeout})
            if self._conn is not None:
                cut(self._conn)
            return
        self._watch_stall()


class _Server(web.Server):
    """aiohttp's Server, making ConnectionHandler connections."""

    def __init__(self, *args: Any, head_timeout: float, stall_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout
        self.stall_timeout = stall_timeout

    def __call__(self) -> RequestHandler:
        return ConnectionHandler(self, loop=self._loop, head_timeout=self.head_timeout,
                                 stall_timeout=self.stall_timeout, **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose connections follow `connection_settings`, the head deadline and
    the stall cut-off."""

    __slots__ = ("_head_timeout", "_settings", "_stall_timeout")

    def __init__(self, app: web.Application, config: Config) -> None:
        self._settings = connection_settings(config)
        self._head_timeout = config.header_timeout_seconds
        self._stall_timeout = config.stream_stall_seconds
        # On SIGTERM: the listener closes (new connections refused), idle connections
        # close, the app's on_shutdown stops taking work (archomata.app), and what is in
        # flight gets the grace to finish before it is cancelled.
        super().__init__(app, shutdown_timeout=config.shutdown_grace_seconds, **self._settings)

    async def _make_server(self) -> web.Server:
        # aiohttp's own start-up (signals, cleanup contexts, freeze), then the same server
        # with our connection class: BaseRunner's extension point for making servers.
        made = await super()._make_server()
        return _Server(made.request_handler, request_factory=made.request_factory,
                       handler_cancellation=made.handler_cancellation,
                       head_timeout=self._head_timeout, stall_timeout=self._stall_timeout,
                       **self._settings)


async def start(app: web.Application, config: Config, *, host: str | None = None,
                port: int | None = None, reuse_port: bool = False) -> Runner:
    """Starts serving `app` (HTTPS when config names a certificate); `runner.cleanup()`
    stops it. `runner.addresses` tells the port when 0 was asked for. `reuse_port`: the
    port is shared with sibling processes (a worker of `serve --workers N`)."""
    runner = Runner(app, config)
    await runner.setup()
    host, port = host or config.host, config.port if port is None else port
    try:
        for address in listen_hosts(host):
            site = web.TCPSite(runner, address, port, ssl_context=tls_context(config),
                               reuse_port=reuse_port)
            await site.start()
            port = port or runner.addresses[-1][1]  # port 0: the next address on the same
    except BaseException as exc:
        await runner.cleanup()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from None
        raise
    return runner


def run(app: web.Application, config: Config, *,
        parent_gone: Callable[[], bool] | None = None) -> None:
    """Serves until SIGINT or SIGTERM, then shuts down gracefully: the listener closes,
    the app stops taking work, what is in flight gets ARCHOMATA_SHUTDOWN_GRACE_SECONDS.

    `parent_gone` is handed in by the supervisor of `serve --workers N`
    (archomata.ops.workers) when this process is one of its workers: the port is then
    shared with the siblings, and serving stops once it says the supervisor is gone.

    The signals only set an event here. aiohttp's own handlers raise GracefulExit out of
    the event loop, which under asyncio.run cancels every task at once: each request in
    flight would be cut (measured: 499s and connections reset mid-transaction)."""

    async def serve_forever() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        runner = await start(app, config, reuse_port=parent_gone is not None)
        watchdog = (asyncio.create_task(_until_orphaned(stop, parent_gone))
                    if parent_gone is not None else None)
        try:
            scheme = "https" if config.tls_cert else "http"
            log.info("serving", extra={"url": f"{scheme}://{config.host}:{config.port}"})
            await stop.wait()
            log.info("stopping", extra={"grace_seconds": config.shutdown_grace_seconds})
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await runner.cleanup()

    asyncio.run(serve_forever())


async def _until_orphaned(stop: asyncio.Event, parent_gone: Callable[[], bool]) -> None:
    # Polled: the kernel tells a child nothing when its parent dies.
    while not parent_gone():  # noqa: ASYNC110
        await asyncio.sleep(1)
    log.warning("the supervising process is gone: stopping")
    stop.set()
