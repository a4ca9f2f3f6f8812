"""Bodies of the trading routes: agents, accounts, risk limits, positions, deals, orders,
strategies. Unknown fields are refused (marshmallow's default), money is DecimalString."""

from __future__ import annotations

import json
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from archomata.trading.values import SIDES, DecimalString, Symbol, Ticket, Timestamp
from archomata.web.schemas import Name
from archomata.web.text import Text

MAX_LOGIN = 2**63 - 1
MAX_PARAMETERS_BYTES = 16 * 1024
MAX_PARAMETERS_DEPTH = 8
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")  # Regexp only matches the start
ORDER_STATUSES = ("pending", "sent", "filled", "rejected", "error", "cancelled")
Text200 = Text(required=True, validate=validate.Length(1, 200))


def _page_of(item: type[Schema]) -> type[Schema]:
    return Schema.from_dict({
        "items": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(allow_none=True, required=True),
    }, name=f"{item.__name__.removesuffix('Schema')}ListSchema")


# --- agents ----------------------------------------------------------------------------

class AgentCreateSchema(Schema):
    name = Name


class AgentSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    key_id = fields.String(required=True, metadata={"description": "Public part of the key"})
    version = fields.String(allow_none=True, required=True)
    terminals = fields.List(fields.Raw(), allow_none=True, required=True)
    last_seen_at = fields.DateTime(allow_none=True, required=True)
    online = fields.Boolean(required=True, metadata={"description": "Seen within 60 s"})
    created_at = fields.DateTime(required=True)


class ApiKeySchema(Schema):
    api_key = fields.String(required=True, metadata={"description": "Shown once"})


class AgentCreatedSchema(ApiKeySchema):
    agent = fields.Nested(AgentSchema, required=True)


AgentListSchema = _page_of(AgentSchema)


# --- accounts and risk limits ----------------------------------------------------------

class CredentialsSchema(Schema):
    password = Text(multiline=True, required=True, validate=validate.Length(1, 256))


class AccountCreateSchema(Schema):
    name = Name
    broker = Text200
    server = Text200
    login = fields.Integer(required=True, strict=True, validate=validate.Range(1, MAX_LOGIN))
    environment = Text(required=True, validate=validate.OneOf(["demo", "live"]))
    agent_id = fields.UUID(load_default=None, allow_none=True)
    credentials = fields.Nested(CredentialsSchema, load_default=None, allow_none=True)


class AccountPatchSchema(Schema):
    name = Text(validate=validate.Length(1, 200))
    broker = Text(validate=validate.Length(1, 200))
    server = Text(validate=validate.Length(1, 200))
    login = fields.Integer(strict=True, validate=validate.Range(1, MAX_LOGIN))
    environment = Text(validate=validate.OneOf(["demo", "live"]))
    agent_id = fields.UUID(allow_none=True)
    credentials = fields.Nested(CredentialsSchema, allow_none=True,
                                metadata={"description": "null removes them"})


class AccountSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    broker = fields.String(required=True)
    server = fields.String(required=True)
    login = fields.Integer(required=True)
    environment = fields.String(required=True)
    agent_id = fields.UUID(allow_none=True, required=True)
    has_credentials = fields.Boolean(required=True)
    balance = DecimalString(allow_none=True, required=True)
    equity = DecimalString(allow_none=True, required=True)
    margin = DecimalString(allow_none=True, required=True)
    free_margin = DecimalString(allow_none=True, required=True)
    currency = fields.String(allow_none=True, required=True)
    state_updated_at = fields.DateTime(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


AccountListSchema = _page_of(AccountSchema)


class RiskLimitsSchema(Schema):
    trading_enabled = fields.Boolean(required=True)
    max_order_volume = DecimalString(required=True, allow_none=True, positive=True)
    max_open_positions = fields.Integer(required=True, allow_none=True, strict=True,
                                        validate=validate.Range(0, 1_000_000))
    max_daily_loss = DecimalString(required=True, allow_none=True, non_negative=True)


# --- positions and deals ---------------------------------------------------------------

class PositionSchema(Schema):
    id = fields.UUID(required=True)
    ticket = Ticket(required=True)
    symbol = fields.String(required=True)
    side = fields.String(required=True)
    volume = DecimalString(required=True)
    open_price = DecimalString(required=True)
    current_price = DecimalString(allow_none=True, required=True)
    sl = DecimalString(allow_none=True, required=True)
    tp = DecimalString(allow_none=True, required=True)
    profit = DecimalString(allow_none=True, required=True)
    opened_at = fields.DateTime(required=True)


class DealSchema(Schema):
    id = fields.UUID(required=True)
    ticket = Ticket(required=True)
    order_ticket = Ticket(allow_none=True, required=True)
    position_id = Ticket(allow_none=True, required=True)
    symbol = fields.String(required=True)
    side = fields.String(required=True)
    volume = DecimalString(required=True)
    price = DecimalString(required=True)
    profit = DecimalString(required=True)
    commission = DecimalString(required=True)
    swap = DecimalString(required=True)
    executed_at = fields.DateTime(required=True)


PositionListSchema = _page_of(PositionSchema)
DealListSchema = _page_of(DealSchema)
HistoryQuerySchema = Schema.from_dict({
    "from": Timestamp(load_default=None, metadata={"description": "inclusive"}),
    "to": Timestamp(load_default=None, metadata={"description": "exclusive"}),
    "symbol": Symbol(load_default=None),
}, name="HistoryQuerySchema")


# --- orders ----------------------------------------------------------------------------

class OrderDraftSchema(Schema):
    symbol = Symbol(required=True)
    side = Text(required=True, validate=validate.OneOf(SIDES))
    type = Text(required=True, validate=validate.OneOf(["market", "limit", "stop"]))
    volume = DecimalString(required=True, positive=True)
    price = DecimalString(load_default=None, allow_none=True, positive=True,
                          metadata={"description": "required for limit and stop orders"})
    sl = DecimalString(load_default=None, allow_none=True, positive=True)
    tp = DecimalString(load_default=None, allow_none=True, positive=True)
    client_order_id = Text(
        load_default=None, allow_none=True, validate=validate.Regexp(CLIENT_ORDER_ID),
        metadata={"description": "a retry with the same id returns the first order (200)"})

    @validates_schema
    def _price_matches_type(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("type") in ("limit", "stop") and data.get("price") is None:
            raise ValidationError("Required for limit and stop orders.", "price")
        if data.get("type") == "market" and data.get("price") is not None:
            raise ValidationError("A market order takes no price.", "price")


class OrderSchema(Schema):
    id = fields.UUID(required=True)
    account_id = fields.UUID(required=True)
    client_order_id = fields.String(allow_none=True, required=True)
    symbol = fields.String(required=True)
    side = fields.String(required=True)
    type = fields.String(required=True)
    volume = DecimalString(required=True)
    price = DecimalString(allow_none=True, required=True)
    sl = DecimalString(allow_none=True, required=True)
    tp = DecimalString(allow_none=True, required=True)
    position_ticket = Ticket(allow_none=True, required=True)
    status = fields.String(required=True, validate=validate.OneOf(ORDER_STATUSES))
    broker_ticket = Ticket(allow_none=True, required=True)
    fill_price = DecimalString(allow_none=True, required=True)
    message = fields.String(allow_none=True, required=True)
    created_by = fields.UUID(allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    executed_at = fields.DateTime(allow_none=True, required=True)
    client_tag = fields.String(required=True)  # in the MT5 order comment
    retcode = fields.Integer(allow_none=True, required=True)


OrderListSchema = _page_of(OrderSchema)


class OrderQuerySchema(Schema):
    account_id = fields.UUID(load_default=None)
    status = Text(load_default=None, validate=validate.OneOf(ORDER_STATUSES))


# --- strategies ------------------------------------------------------------------------

def _bounded_object(value: dict[str, Any]) -> None:
    if len(json.dumps(value, separators=(",", ":"))) > MAX_PARAMETERS_BYTES:
        raise ValidationError(f"At most {MAX_PARAMETERS_BYTES} bytes of JSON.")
    if _depth(value) > MAX_PARAMETERS_DEPTH:
        raise ValidationError(f"At most {MAX_PARAMETERS_DEPTH} levels of nesting.")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _account_ids(**kwargs: Any) -> fields.List[Any]:
    return fields.List(fields.UUID(), validate=validate.Length(max=100), **kwargs)


def _parameters(**kwargs: Any) -> fields.Dict:
    return fields.Dict(keys=Text(validate=validate.Length(1, 200)),
                       validate=_bounded_object, **kwargs)


class StrategyCreateSchema(Schema):
    name = Name
    description = Text(multiline=True, load_default="", validate=validate.Length(max=2000))
    account_ids = _account_ids(load_default=list)
    parameters = _parameters(load_default=dict)
    enabled = fields.Boolean(load_default=False)


class StrategyPatchSchema(Schema):
    name = Text(validate=validate.Length(1, 200))
    description = Text(multiline=True, validate=validate.Length(max=2000))
    account_ids = _account_ids()
    parameters = _parameters()
    enabled = fields.Boolean()


class StrategySchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    account_ids = fields.List(fields.UUID(), required=True)
    parameters = fields.Dict(required=True)
    enabled = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


StrategyListSchema = _page_of(StrategySchema)
