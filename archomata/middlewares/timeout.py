"""Answers 504 when a request runs past its time; the bridge long poll gets longer.

Whatever runs longer than ARCHOMATA_REQUEST_TIMEOUT_SECONDS holds no database connection
while it waits: the long poll claims in short transactions and waits with none
(bridge/routes.py); an export reads each page in a transaction of its own and writes
with none (handlers/audit_logs.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.errors import GatewayTimeout

LONG_POLL_PATH = "/api/v1/bridge/commands"
# Streamed exports run as long as the data lasts, at the pace the client reads; one that
# reads nothing is cut by the connection handler (archomata.server, stall cut-off), and
# archomata.exports bounds how many run at once.
UNTIMED_PATHS = frozenset({"/api/v1/audit-logs/export"})


def timeout_for(request: web.Request) -> float | None:
    config = request.app[keys.CONFIG]
    if request.path == LONG_POLL_PATH:
        return config.long_poll_timeout_seconds
    if request.path in UNTIMED_PATHS:
        return None
    return config.request_timeout_seconds


@web.middleware
async def timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        async with asyncio.timeout(timeout_for(request)) as scope:
            return await handler(request)
    except TimeoutError as exc:
        if scope.expired():
            raise GatewayTimeout("The request took too long.") from exc
        raise
