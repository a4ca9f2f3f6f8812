"""Refuses a declared body over the limit before anyone reads it.

Bodies without a Content-Length (chunked) are held to the same limit by aiohttp's
`client_max_size` when read; the errors middleware renders both as 413.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys
from archomata.errors import BadRequest, PayloadTooLarge


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    declared = request.headers.get("Content-Length")
    if declared is not None:
        limit = request.app[keys.CONFIG].max_body_bytes
        # ASCII digits only: isdigit also takes '²' (a Latin-1 header byte), which int refuses.
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest("Content-Length is not a number.", code="bad_content_length")
        if int(declared) > limit:
            raise PayloadTooLarge(f"The request body exceeds {limit} bytes.")
    return await handler(request)
