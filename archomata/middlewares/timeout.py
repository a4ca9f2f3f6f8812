"""Answers 504 when a request runs past its time; the bridge long poll gets longer."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.errors import GatewayTimeout

LONG_POLL_PREFIX = "/api/v1/bridge/commands"


def timeout_for(request: web.Request) -> float:
    config = request.app[keys.CONFIG]
    if request.path == LONG_POLL_PREFIX:
        return config.long_poll_timeout_seconds
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
