"""Reading JSON request bodies and writing JSON responses."""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError

from archomata.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as `{"field.sub": ["..."]}`."""
    if isinstance(messages, list):
        return {prefix or "_body": [str(m) for m in messages]}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(_flatten(value, name))
    return flat


async def read_json(request: web.Request) -> Any:
    """The parsed JSON body; 415 for another content type, 400 when it is not JSON."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send the body as application/json.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("The request body is too large.") from exc
    try:
        text = raw.decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadRequest("The body is not valid JSON.", code="malformed_json") from exc
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # orjson refuses a few things the stdlib reads (integers past 64 bits): ask it
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest("The body is not valid JSON.", code="malformed_json") from exc


@functools.cache
def schema_instance(cls: type[Schema]) -> Schema:
    """One instance per schema class: schemas hold no per-load state, and building one
    binds every field again (a tenth of a small write request's CPU, measured)."""
    return cls()


def validate(schema: Schema | type[Schema], data: Any) -> Any:
    """`schema.load(data)`, with failures as 422 and per-field messages. Pass the class:
    its one instance is reused."""
    if isinstance(schema, type):
        schema = schema_instance(schema)
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.",
                               errors={"_body": ["Must be a JSON object."]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed("The request body is invalid.",
                               errors=_flatten(exc.messages)) from exc


async def load_body(request: web.Request, schema: Schema | type[Schema]) -> Any:
    return validate(schema, await read_json(request))


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    """A JSON response. Frozen dataclasses from the store serialise directly (orjson):
    their field names are the API's, and tests check them against the schemas."""
    return web.Response(body=dumps(data), status=status, content_type="application/json",
                        **kwargs)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Money and volumes are decimal strings, never floats. str() is the fast way, but
        # it writes very small or large magnitudes with an exponent ("0E-8"), which is no
        # decimal string: those go through format(, "f").
        text = str(value)
        return format(value, "f") if "E" in text else text
    if isinstance(value, UUID):
        return str(value)  # asyncpg's UUID subclass, which orjson does not know
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_default)


def uuid_param(request: web.Request, name: str) -> UUID:
    """A path id; anything that is not a UUID cannot exist, so it is a 404."""
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise NotFound("No such resource.") from None
