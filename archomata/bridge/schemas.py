"""Bodies of the bridge routes.

Position and deal lists are parsed by `Rows`, a List field that checks each row with the
plain parsers of archomata.trading.values and returns columns ready for `unnest`: as strict
as a nested schema (unknown fields, types, required fields), but cheap enough that a
1000-deal batch is mostly the database's work. The OpenAPI document still shows the rows
as the nested schema they follow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from archomata.trading.schemas import CredentialsSchema
from archomata.trading.store.market import DEAL_FIELDS, POSITION_FIELDS
from archomata.trading.values import (
    SIDES,
    DecimalString,
    Symbol,
    Ticket,
    Timestamp,
    parse_decimal,
    parse_side,
    parse_symbol,
    parse_ticket,
    parse_timestamp,
)
from archomata.web.text import QueryInteger, Text

MAX_DEALS = 1000
MAX_POSITIONS = 5000
MAX_ROW_ERRORS = 20
MAX_TERMINALS_BYTES = 8 * 1024
COMMAND_RESULTS = ("filled", "rejected", "error")


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    parse: Callable[[Any], Any]
    required: bool = True
    default: Any = None


class Rows(fields.List[Any]):
    """A list of flat objects, loaded as one list per column (in `columns` order)."""

    def __init__(self, inner: fields.Nested, columns: tuple[Column, ...], max_rows: int,
                 unique: str | None = None, **kwargs: Any) -> None:
        super().__init__(inner, validate=validate.Length(max=max_rows), **kwargs)
        self.columns = columns
        self.max_rows = max_rows
        self.names = frozenset(c.name for c in columns)
        self.unique = unique

    # Loads columns, not items: the list of rows comes back transposed.
    def _deserialize(self, value: Any, attr: str | None, data: Any,  # type: ignore[override]
                     **kwargs: Any) -> list[list[Any]]:
        if not isinstance(value, list):
            raise ValidationError("Not a valid list.")
        if len(value) > self.max_rows:
            raise ValidationError(f"At most {self.max_rows} items.")
        columns: list[list[Any]] = [[] for _ in self.columns]
        errors: dict[int, dict[str, list[str]]] = {}
        for index, item in enumerate(value):
            problems = self._row(item, columns)
            if problems:
                errors[index] = problems
                if len(errors) >= MAX_ROW_ERRORS:
                    break
        if not errors and self.unique is not None:
            errors = self._repeats(columns)
        if errors:
            raise ValidationError(errors)
        return columns

    def _repeats(self, columns: list[list[Any]]) -> dict[int, dict[str, list[str]]]:
        """Rows repeating the `unique` column's value: the table's unique index would
        refuse the whole batch, so the client hears which rows, as a 422."""
        name = self.unique
        assert name is not None
        values = columns[[c.name for c in self.columns].index(name)]
        first: dict[Any, int] = {}
        errors: dict[int, dict[str, list[str]]] = {}
        for index, value in enumerate(values):
            seen = first.setdefault(value, index)
            if seen != index and len(errors) < MAX_ROW_ERRORS:
                errors[index] = {name: [f"Repeats the {name} of item {seen}."]}
        return errors

    def _row(self, item: Any, columns: list[list[Any]]) -> dict[str, list[str]]:
        if not isinstance(item, dict):
            return {"_schema": ["Not an object."]}
        problems = {str(k): ["Unknown field."] for k in item if k not in self.names}
        for column, out in zip(self.columns, columns, strict=True):
            raw = item.get(column.name)
            if raw is None:
                if column.required:
                    problems[column.name] = ["Missing data for required field."]
                out.append(column.default)
                continue
            try:
                out.append(column.parse(raw))
            except ValueError as exc:
                problems[column.name] = [str(exc)]
        return problems


_BY_NAME: dict[str, Column] = {c.name: c for c in (
    Column("ticket", parse_ticket),
    Column("order_ticket", parse_ticket, required=False),
    Column("position_id", parse_ticket, required=False),
    Column("symbol", parse_symbol),
    Column("side", parse_side),
    Column("volume", parse_decimal),
    Column("price", parse_decimal),
    Column("open_price", parse_decimal),
    Column("current_price", parse_decimal, required=False),
    Column("sl", parse_decimal, required=False),
    Column("tp", parse_decimal, required=False),
    Column("profit", parse_decimal, required=False),
    Column("commission", parse_decimal, required=False),
    Column("swap", parse_decimal, required=False),
    Column("opened_at", parse_timestamp),
    Column("executed_at", parse_timestamp),
)}
POSITION_COLUMNS = tuple(_BY_NAME[name] for name in POSITION_FIELDS)
DEAL_COLUMNS = tuple(_BY_NAME[name] if name not in ("profit", "commission", "swap")
                     else Column(name, parse_decimal, required=False, default=0)
                     for name in DEAL_FIELDS)


class PositionInSchema(Schema):
    ticket = Ticket(required=True)
    symbol = Symbol(required=True)
    side = Text(required=True, validate=validate.OneOf(SIDES))
    volume = DecimalString(required=True)
    open_price = DecimalString(required=True)
    current_price = DecimalString(allow_none=True)
    sl = DecimalString(allow_none=True)
    tp = DecimalString(allow_none=True)
    profit = DecimalString(allow_none=True)
    opened_at = Timestamp(required=True)


class DealInSchema(Schema):
    ticket = Ticket(required=True)
    order_ticket = Ticket(allow_none=True)
    position_id = Ticket(allow_none=True)
    symbol = Symbol(required=True)
    side = Text(required=True, validate=validate.OneOf(SIDES))
    volume = DecimalString(required=True)
    price = DecimalString(required=True)
    profit = DecimalString(allow_none=True)
    commission = DecimalString(allow_none=True)
    swap = DecimalString(allow_none=True)
    executed_at = Timestamp(required=True)


def _bounded_terminals(value: list[Any]) -> None:
    if len(json.dumps(value, separators=(",", ":"))) > MAX_TERMINALS_BYTES:
        raise ValidationError(f"At most {MAX_TERMINALS_BYTES} bytes of JSON.")


class HeartbeatSchema(Schema):
    version = Text(required=True, validate=validate.Length(1, 100))
    terminals = fields.List(fields.Raw(), load_default=None, allow_none=True,
                            validate=[validate.Length(max=64), _bounded_terminals])


class HeartbeatResultSchema(Schema):
    server_time = fields.DateTime(required=True)


class BridgeAccountSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    broker = fields.String(required=True)
    server = fields.String(required=True)
    login = fields.Integer(required=True)
    environment = fields.String(required=True)
    credentials = fields.Nested(CredentialsSchema, allow_none=True, required=True)


class BridgeAccountListSchema(Schema):
    items = fields.List(fields.Nested(BridgeAccountSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class AccountStateSchema(Schema):
    balance = DecimalString(required=True)
    equity = DecimalString(required=True)
    margin = DecimalString(required=True)
    free_margin = DecimalString(required=True)
    currency = Text(required=True, validate=validate.Length(1, 16))
    positions = Rows(fields.Nested(PositionInSchema), POSITION_COLUMNS, MAX_POSITIONS,
                     unique="ticket", required=True)


class DealBatchSchema(Schema):
    deals = Rows(fields.Nested(DealInSchema), DEAL_COLUMNS, MAX_DEALS, required=True)


class DealBatchResultSchema(Schema):
    inserted = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)


class CommandsQuerySchema(Schema):
    wait = QueryInteger(load_default=0, validate=validate.Range(0, 30),
                          metadata={"description": "seconds to wait for a command (long poll)"})


class CommandSchema(Schema):
    id = fields.UUID(required=True)
    attempt = fields.Integer(required=True)  # 1 the first time it is handed out
    account_login = fields.Integer(required=True)
    type = fields.String(required=True)
    payload = fields.Dict(required=True)
    lease_expires_at = fields.DateTime(required=True)


class CommandListSchema(Schema):
    commands = fields.List(fields.Nested(CommandSchema), required=True)


class CommandResultSchema(Schema):
    status = Text(required=True, validate=validate.OneOf(COMMAND_RESULTS))
    broker_ticket = Ticket(load_default=None, allow_none=True)
    price = DecimalString(load_default=None, allow_none=True, positive=True)
    # The broker's return code (MT5 trade server codes such as 10009), kept as given.
    retcode = fields.Integer(load_default=None, allow_none=True, strict=True,
                             validate=validate.Range(-2**31, 2**31 - 1))
    message = Text(multiline=True, load_default=None, allow_none=True,
                            validate=validate.Length(max=1000))

