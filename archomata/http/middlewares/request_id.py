"""Gives every request an id: the client's `X-Request-ID` when it is a sane token, else a
new one. The id is echoed on the response and carried into logs and audit entries."""

from __future__ import annotations

import random
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys

HEADER = "X-Request-ID"
SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def request_id_of(request: web.Request) -> str:
    offered = request.headers.get(HEADER, "")
    if offered and SANE_ID.fullmatch(offered):
        return offered
    # 32 hex digits, as uuid4().hex was, without a system call per request: an id only
    # has to be unique (128 random bits; `random` reseeds in a forked child), never
    # secret, since any client may choose its own.
    return f"{random.getrandbits(128):032x}"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_of(request)
    request[keys.REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # Only reached if the errors middleware let one through (it should not).
        exc.headers[HEADER] = request_id
        raise
    response.headers[HEADER] = request_id
    return response
