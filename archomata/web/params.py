"""What the handlers take from a request besides its body: path ids, and the keyset
position a cursor names. The caller's scope is the guard's (archomata.access.guards.caller)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from aiohttp import web

from archomata.errors import NotFound
from archomata.web.json_io import uuid_param
from archomata.web.pagination import Page

__all__ = ["after", "client_gone", "int_param", "uuid_param"]

MAX_BIGINT = 2**63 - 1


def client_gone(request: web.Request) -> bool:
    """Whether the client has hung up (or its connection was cut)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def int_param(request: web.Request, name: str) -> int:
    """A numeric path part (login, ticket); anything else cannot exist, so it is a 404.
    ASCII digits only: `isdecimal` and `int` also take Arabic-Indic or fullwidth ones,
    another spelling of the same number."""
    text = request.match_info[name]
    if not (text.isascii() and text.isdecimal()) or len(text) > 19 or int(text) > MAX_BIGINT:
        raise NotFound("No such resource.")
    return int(text)


def after(page: Page) -> tuple[datetime, UUID] | None:
    return (page.after.at, page.after.id) if page.after else None
