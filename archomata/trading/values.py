"""The value types of trading bodies, parsed strictly: decimals as strings (never floats),
tickets as integers, symbols, sides, RFC 3339 timestamps. Plain functions that raise
ValueError with the message a client sees, shared by the marshmallow fields and the bulk
row parser of the bridge.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields

# ASCII digits: `\d` would take Arabic-Indic or fullwidth ones too (which Decimal reads).
DECIMAL = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,10})?")
SYMBOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._#+-]{0,31}")
MAX_TICKET = 2**63 - 1
SIDES = ("buy", "sell")


def parse_decimal(value: Any) -> Decimal:
    if not isinstance(value, str) or not DECIMAL.fullmatch(value):
        raise ValueError('Not a decimal string such as "1.25".')
    return Decimal(value)


def parse_ticket(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TICKET:
        raise ValueError("Not a ticket (a non-negative integer).")
    return value


def parse_symbol(value: Any) -> str:
    if not isinstance(value, str) or not SYMBOL.fullmatch(value):
        raise ValueError("Not a symbol (1 to 32 letters, digits or ._#+-).")
    return value


def parse_side(value: Any) -> str:
    if value not in SIDES:
        raise ValueError("Must be buy or sell.")
    return str(value)


def parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("Not an RFC 3339 timestamp.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("Not an RFC 3339 timestamp.") from None
    if moment.tzinfo is None:
        raise ValueError("The timestamp needs a time zone (e.g. Z).")
    return moment


def decimal_text(value: Decimal | None) -> str | None:
    """A decimal as the API writes it: plain notation, never an exponent."""
    return None if value is None else format(value, "f")


def with_decimal_texts(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with its decimals as the API writes them (for JSON that is stored)."""
    return {k: decimal_text(v) if isinstance(v, Decimal) else v for k, v in values.items()}


class DecimalString(fields.String):
    """A decimal sent and answered as a JSON string; `positive` or `non_negative` bound it
    from below."""

    def __init__(self, *, positive: bool = False, non_negative: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.positive = positive
        self.non_negative = non_negative

    # Sent as a string, loaded as a Decimal.
    def _deserialize(self, value: Any, attr: str | None, data: Any,  # type: ignore[override]
                     **kwargs: Any) -> Decimal:
        try:
            number = parse_decimal(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        if self.positive and number <= 0:
            raise ValidationError("Must be greater than 0.")
        if self.non_negative and number < 0:
            raise ValidationError("Must not be negative.")
        return number

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return decimal_text(value)


class Symbol(fields.String):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            return parse_symbol(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Ticket(fields.Integer):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            return parse_ticket(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Timestamp(fields.DateTime):
    """An RFC 3339 timestamp with a time zone."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            return parse_timestamp(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
