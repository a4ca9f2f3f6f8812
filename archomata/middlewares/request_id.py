"""Gives every request an id: the client's `X-Request-ID` when it is a sane token, else a
new one. The id is echoed on the response and carried into logs and audit entries."""

from __future__ import annotations

import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys

HEADER = "X-Request-ID"
SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


def request_id_of(request: web.Request) -> str:
    offered = request.headers.get(HEADER, "")
    # 32 hex digits, as uuid4().hex was, without building a UUID on every request.
    return offered if offered and SANE_ID.fullmatch(offered) else secrets.token_hex(16)


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
