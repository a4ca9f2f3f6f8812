"""Trading dataclasses go to clients as they are (orjson); their schemas document them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from marshmallow import Schema

from archomata.bridge.agents import Agent
from archomata.bridge.commands import Command
from archomata.bridge.schemas import CommandSchema
from archomata.trading.risk import RiskLimits
from archomata.trading.schemas import (
    AccountSchema,
    AgentSchema,
    DealSchema,
    OrderSchema,
    PositionSchema,
    RiskLimitsSchema,
    StrategySchema,
)
from archomata.trading.store.accounts import Account
from archomata.trading.store.market import Deal, Position
from archomata.trading.store.orders import Order
from archomata.trading.store.strategies import Strategy
from archomata.web.json_io import dumps

NOW = datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=UTC)
D = Decimal


@pytest.mark.parametrize(("value", "schema"), [
    (Agent(uuid.uuid4(), "T", "0123456789abcdef", "1.0", [{"build": 1}], NOW, True, NOW),
     AgentSchema),
    (Account(uuid.uuid4(), None, "A", "B", "S", 7, "demo", True, D("10.50"), None, D("0"),
             D("0E-8"), "USD", NOW, NOW, NOW), AccountSchema),
    (Position(uuid.uuid4(), 5, "EURUSD", "buy", D("0.10"), D("1.1"), None, None, D("1.2"),
              D("-3.5"), NOW), PositionSchema),
    (Deal(uuid.uuid4(), 5, None, 9, "EURUSD", "sell", D("1"), D("1.1"), D("0"), D("-0.7"),
          D("0.00"), NOW), DealSchema),
    (Order(uuid.uuid4(), uuid.uuid4(), "c-1", "EURUSD", "buy", "limit", D("0.10"), D("1.1"),
           None, D("1.3"), None, "filled", 77, D("1.10002"), None, uuid.uuid4(), NOW, NOW,
           NOW, "am0123456789abcdefgh", 10009), OrderSchema),
    (Strategy(uuid.uuid4(), "S", "", [uuid.uuid4()], {"a": [1, {"b": None}]}, True, NOW, NOW),
     StrategySchema),
    (RiskLimits(True, D("2.5"), 3, None), RiskLimitsSchema),
    (Command(uuid.uuid4(), 2, 7, "place_order", {"volume": "1"}, NOW), CommandSchema),
])
def test_dataclass_serialises_as_its_schema_documents(value: Any, schema: type[Schema]) -> None:
    fast = orjson.loads(dumps(value))
    documented = json.loads(json.dumps(schema().dump(value), default=str))
    assert fast == documented


def test_small_zeros_are_plain_decimal_strings() -> None:
    assert orjson.loads(dumps({"v": D("0E-8")})) == {"v": "0.00000000"}
