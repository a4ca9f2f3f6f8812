"""How the service listens: TLS 1.3 only, bounded request heads, and no slow client holding
a connection. `serve` and the tests both start the service through `start` here.

- Request line and each header at most 8 KiB, at most 100 headers (400 beyond).
- A request head must be complete within ARCHOMATA_HEADER_TIMEOUT_SECONDS of its first
  byte, or the connection is closed (aiohttp has no such timeout: `HeadDeadlineHandler`).
  Against clients that trickle a header byte by byte to hold connections open.
- An idle keep-alive connection closes after ARCHOMATA_KEEPALIVE_TIMEOUT_SECONDS (default
  75 s: longer than the usual 60 s of a load balancer, so it never reuses a connection
  we just closed). A body is bounded by the request timeout (middlewares/timeout.py),
  an unread one by the lingering time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from archomata.config import Config

log = logging.getLogger(__name__)

MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 100
LINGERING_SECONDS = 5.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


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
        "access_log": None,  # archomata.middlewares.access_log writes our own
    }


class HeadDeadlineHandler(RequestHandler):
    """aiohttp's connection handler, closing a connection whose request head is not
    complete `head_timeout` seconds after its first byte arrived on an idle connection,
    and logging a malformed request without quoting it.

    Idle means every request parsed so far has been answered, so body bytes of a request
    in progress never start the clock. Relies on `_request_count`, which aiohttp's
    handler increments once per parsed request head (tests/test_server.py would notice
    a change).
    """

    __slots__ = ("_answered", "_head_timeout", "_head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._answered = 0

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


class _Server(web.Server):
    """aiohttp's Server, making HeadDeadlineHandler connections."""

    def __init__(self, *args: Any, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        return HeadDeadlineHandler(self, loop=self._loop, head_timeout=self.head_timeout,
                                   **self._kwargs)


class Runner(web.AppRunner):
    """An AppRunner whose connections follow `connection_settings` and the head deadline."""

    __slots__ = ("_head_timeout", "_settings")

    def __init__(self, app: web.Application, config: Config, *,
                 handle_signals: bool = False) -> None:
        self._settings = connection_settings(config)
        self._head_timeout = config.header_timeout_seconds
        super().__init__(app, handle_signals=handle_signals,
                         shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS, **self._settings)

    async def _make_server(self) -> web.Server:
        # aiohttp's own start-up (signals, cleanup contexts, freeze), then the same server
        # with our connection class: BaseRunner's extension point for making servers.
        made = await super()._make_server()
        return _Server(made.request_handler, request_factory=made.request_factory,
                       handler_cancellation=made.handler_cancellation,
                       head_timeout=self._head_timeout, **self._settings)


async def start(app: web.Application, config: Config, *, host: str | None = None,
                port: int | None = None, handle_signals: bool = False) -> Runner:
    """Starts serving `app` (HTTPS when config names a certificate); `runner.cleanup()`
    stops it. `runner.addresses` tells the port when 0 was asked for."""
    runner = Runner(app, config, handle_signals=handle_signals)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host or config.host,
                           config.port if port is None else port,
                           ssl_context=tls_context(config))
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def run(app: web.Application, config: Config) -> None:
    """Serves until SIGINT or SIGTERM, then shuts down gracefully."""

    async def serve_forever() -> None:
        runner = await start(app, config, handle_signals=True)
        try:
            scheme = "https" if config.tls_cert else "http"
            log.info("serving", extra={"url": f"{scheme}://{config.host}:{config.port}"})
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(serve_forever())
