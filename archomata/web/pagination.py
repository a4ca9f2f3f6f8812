"""Keyset pagination: `?limit=&cursor=` -> `{"items": [...], "next_cursor": ...}`.

A cursor is the (timestamp, id) of the last item served, base64url-encoded JSON: opaque
to clients, stable while new rows arrive (they sort before it), served by an index on
(timestamp desc, id desc).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from marshmallow import Schema, fields, validate

from archomata.errors import ValidationFailed
from archomata.web.json_io import load_valid
from archomata.web.text import QueryInteger

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


class PageQuerySchema(Schema):
    limit = QueryInteger(load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


@dataclass(frozen=True, slots=True)
class Position:
    at: datetime
    id: UUID


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    after: Position | None


def encode(at: datetime, item_id: UUID) -> str:
    raw = json.dumps([at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(cursor: str) -> Position:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        # A client can hand back any JSON here: only the two strings encode() writes.
        if not isinstance(value, list) or len(value) != 2 \
                or not all(isinstance(part, str) for part in value):
            raise ValueError("not a cursor")
        return Position(datetime.fromisoformat(value[0]), UUID(value[1]))
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ValidationFailed("The cursor is not valid.",
                               errors={"cursor": ["Not a valid cursor."]}) from None


def page_of(request: web.Request,
            schema: Schema | type[Schema] | None = None) -> tuple[Page, dict[str, Any]]:
    """The page asked for, and the other query parameters as `schema` loads them."""
    query = dict(request.query)
    page_args = {k: query.pop(k) for k in ("limit", "cursor") if k in query}
    loaded = load_valid(PageQuerySchema, page_args, query=True)
    filters = load_valid(schema, query, query=True) if schema is not None else {}
    if schema is None and query:
        raise ValidationFailed("Unknown query parameters.",
                               errors={k: ["Unknown field."] for k in query})
    cursor = loaded["cursor"]
    return Page(loaded["limit"], decode(cursor) if cursor else None), filters


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


def listing(items: list[Any], rows_fetched: int, page: Page,
            key: str = "created_at", id_key: str = "id") -> dict[str, Any]:
    """The list body: fetch `limit + 1` rows so that a next page is known without a count.
    Items are dicts or dataclasses; the cursor is read from the last one served."""
    more = rows_fetched > page.limit
    items = items[:page.limit]
    last = items[-1] if items else None
    next_cursor = encode(_field(last, key), _field(last, id_key)) if more and last else None
    return {"items": items, "next_cursor": next_cursor}
