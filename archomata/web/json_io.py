"""Reading JSON request bodies and writing JSON responses."""

from __future__ import annotations

import bisect
import functools
import re
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
from archomata.text_rules import CONTROL, CONTROL_MESSAGE

MAX_DEPTH = 64
INT_MIN, UINT_MAX = -(2**63), 2**64 - 1
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
BIG_FLOAT = float(2**63)
# An integer literal as a JSON value: after `[`, `:` or `,` (or at the start), before
# `,`, `]`, `}` (or the end), blanks allowed around it.
_INTEGER_TOKEN = re.compile(rb"(?:^|[\[:,])[ \t\r\n]*(-?\d{19,})[ \t\r\n]*(?=[,\]}]|$)")
# What may be an escaped control character other than TAB, LF, CR: a hint, cheap to
# scan for (a literal prefix); the walk of the parsed body decides.
_CONTROL_ESCAPE = re.compile(rb"\\(?:[bf]|u00[01]|u007[fF])")


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
    """The parsed JSON body; 415 for another content type, 400 when it is not JSON (or
    nests too deep, or holds a number out of range), 422 when a string breaks the text
    rules."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send the body as application/json.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge("The request body is too large.") from exc
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        try:
            raw = raw.decode(charset).encode()
        except (UnicodeError, LookupError) as exc:
            raise BadRequest("The body is not valid JSON.", code="malformed_json") from exc
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """orjson, and nothing else: the stdlib parser it once fell back to recursed into a
    500 on deep nesting and raised on long integers. Then the limits orjson lacks: at
    most MAX_DEPTH levels, integers within 64 bits, every string under the text rules."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _refusal(exc.msg) from None
    if _shape(value, 1) and _integer_out_of_range(raw):
        raise BadRequest("An integer in the body does not fit in 64 bits.",
                         code="number_out_of_range")
    # A control character reaches a JSON string only as an escape, or as a raw DEL; a
    # body with neither (nearly all) is not walked for them.
    if _CONTROL_ESCAPE.search(raw) or b"\x7f" in raw:
        _refuse_control(value)
    return value


def _refusal(message: str) -> BadRequest:
    if message.startswith("depth limit"):
        return _too_deep()
    if message.startswith("number"):
        return BadRequest("A number in the body is out of range.", code="number_out_of_range")
    return BadRequest("The body is not valid JSON.", code="malformed_json")


def _too_deep() -> BadRequest:
    return BadRequest(f"The body nests deeper than {MAX_DEPTH} levels.", code="json_too_deep")


def _shape(node: Any, depth: int) -> bool:
    """Refuses nesting past MAX_DEPTH (the recursion stops there); says whether a float
    beyond the int64 range is in the body, which orjson makes of an integer literal too
    long for 64 bits. Measured: about half of orjson's own time on a 1000-deal batch."""
    if depth > MAX_DEPTH:
        raise _too_deep()
    big = False
    for item in node.values() if type(node) is dict else node if type(node) is list else ():
        kind = type(item)
        if kind is dict or kind is list:
            big = _shape(item, depth + 1) or big
        elif kind is float and not -BIG_FLOAT < item < BIG_FLOAT:
            big = True
    return big or (type(node) is float and not -BIG_FLOAT < node < BIG_FLOAT)


def _integer_out_of_range(raw: bytes) -> bool:
    """Whether an integer literal lies outside what orjson keeps as an integer (int64 and
    uint64): it reads a longer one as a float, silently losing digits."""
    strings = [m.span() for m in _STRING.finditer(raw)]
    starts = [s for s, _ in strings]
    for match in _INTEGER_TOKEN.finditer(raw):
        digits = match.group(1)
        if len(digits) <= 21 and INT_MIN <= int(digits) <= UINT_MAX:
            continue
        at = bisect.bisect_right(starts, match.start(1)) - 1
        if at < 0 or strings[at][1] <= match.start(1):  # not inside a string
            return True
    return False


def _refuse_control(value: Any) -> None:
    """Walks the parsed body (no recursion) to the first string, or key, holding a
    control character, and refuses it by its path. Paths are linked tuples until then."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if CONTROL.search(key):
                    _refuse_text(path, "A key must not contain control characters.")
                stack.append((item, (path, key)))
        elif isinstance(node, list):
            stack.extend((item, (path, index)) for index, item in enumerate(node))
        elif isinstance(node, str) and CONTROL.search(node):
            _refuse_text(path, CONTROL_MESSAGE)


def _refuse_text(path: tuple[Any, ...], message: str) -> None:
    parts: list[str] = []
    while path:
        path, part = path
        parts.append(str(part))
    name = ".".join(reversed(parts)) or "_body"
    raise ValidationFailed("The request body is invalid.", errors={name: [message]})


@functools.cache
def schema_instance(cls: type[Schema]) -> Schema:
    """One instance per schema class: schemas hold no per-load state, and building one
    binds every field again (a tenth of a small write request's CPU, measured)."""
    return cls()


def load_valid(schema: Schema | type[Schema], data: Any, *, query: bool = False) -> Any:
    """`schema.load(data)`, with failures as 422 and per-field messages. Pass the class:
    its one instance is reused. `query`: `data` is the query string's parameters, and the
    detail names them as such (a newcomer told "request body" looks in the wrong place)."""
    if isinstance(schema, type):
        schema = schema_instance(schema)
    if not isinstance(data, dict):
        raise ValidationFailed("The body must be a JSON object.",
                               errors={"_body": ["Must be a JSON object."]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        errors = _flatten(exc.messages)
        raise ValidationFailed(_query_problem(errors) if query else
                               "The request body is invalid.", errors=errors) from exc


def _query_problem(errors: dict[str, list[str]]) -> str:
    names = sorted(errors)
    if len(names) == 1:
        return f"The query parameter {names[0]} is invalid."
    return f"The query parameters {', '.join(names)} are invalid."


async def load_body(request: web.Request, schema: Schema | type[Schema]) -> Any:
    return load_valid(schema, await read_json(request))


def json_response(data: Any, status: int = 200, *, location: str | None = None,
                  **kwargs: Any) -> web.Response:
    """A JSON response. Frozen dataclasses from the store serialise directly (orjson):
    their field names are the API's, and tests check them against the schemas.

    A 201 names what it created: `location`, its path, is the `Location` header (RFC 9110
    §15.3.2). One without it is refused here, so no created answer can leave it out."""
    if status == 201 and location is None:
        raise ValueError("a 201 answer needs the created resource's path (location=)")
    if location is not None:
        kwargs["headers"] = {**kwargs.get("headers", {}), "Location": location}
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
    """A path id; anything that is not a UUID cannot exist, so it is a 404. ASCII only:
    UUID() reads fullwidth or Arabic-Indic digits too, another spelling of the same id."""
    text = request.match_info[name]
    try:
        if not text.isascii():
            raise ValueError("not ASCII")
        return UUID(text)
    except ValueError:
        raise NotFound("No such resource.") from None
