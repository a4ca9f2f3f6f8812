"""Answers 504 when a request runs past its time, as its route's policy classes it
(archomata.access.route_policy): the bridge long poll gets longer, streamed exports and the
operations routes none.

Whatever runs longer than ARCHOMATA_REQUEST_TIMEOUT_SECONDS holds no database connection
while it waits: the long poll claims in short transactions and waits with none
(bridge/routes.py); an export reads each page in a transaction of its own and writes
with none (audit/routes.py).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.access.route_policy import TimeoutClass, policy_of
from archomata.errors import GatewayTimeout


def timeout_for(request: web.Request) -> float | None:
    timeout = policy_of(request).timeout
    if timeout is TimeoutClass.UNTIMED:
        # Streamed exports run as long as the data lasts, at the pace the client reads; one
        # that reads nothing is cut by the connection handler (archomata.http.server, stall
        # cut-off), and archomata.audit.export_slots bounds how many run at once.
        return None
    config = request.app[keys.CONFIG]
    if timeout is TimeoutClass.LONG_POLL:
        return config.long_poll_timeout_seconds
    return config.request_timeout_seconds


@web.middleware
async def timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    seconds = timeout_for(request)
    if seconds is None:
        return await handler(request)  # not even an idle timer to arm and cancel
    try:
        async with asyncio.timeout(seconds) as scope:
            return await handler(request)
    except TimeoutError as exc:
        if scope.expired():
            raise GatewayTimeout("The request took too long.") from exc
        raise
