"""Risk limits of an account, checked when an order is placed: plain rules, no I/O.

- `trading_enabled`: false refuses every new order.
- `max_order_volume`: an order's volume may not exceed it.
- `max_open_positions`: open positions (as the agent last reported them) plus orders not
  yet executed may not reach more than it with this order.
- `max_daily_loss`: once today's (UTC) realised loss, from today's deals (profit +
  commission + swap), has reached it, no new order (with 0, any loss stops trading).

A limit of None is no limit. Closing a position only reduces exposure, so it is not
checked here (see archomata.handlers.orders).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Limit(StrEnum):
    TRADING_ENABLED = "trading_enabled"
    MAX_ORDER_VOLUME = "max_order_volume"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_DAILY_LOSS = "max_daily_loss"


@dataclass(frozen=True, slots=True)
class RiskLimits:
    trading_enabled: bool = True
    max_order_volume: Decimal | None = None
    max_open_positions: int | None = None
    max_daily_loss: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Exposure:
    """What the account holds now."""

    open_positions: int
    orders_in_flight: int
    realised_today: Decimal  # net result of today's deals; negative is a loss


@dataclass(frozen=True, slots=True)
class Breach:
    limit: Limit
    message: str


def check(limits: RiskLimits, exposure: Exposure, volume: Decimal) -> Breach | None:
    """The first limit a new order of `volume` would breach, or None."""
    if not limits.trading_enabled:
        return Breach(Limit.TRADING_ENABLED, "Trading is disabled on this account.")
    if limits.max_order_volume is not None and volume > limits.max_order_volume:
        return Breach(Limit.MAX_ORDER_VOLUME,
                      f"The volume exceeds the limit of {limits.max_order_volume}.")
    if limits.max_open_positions is not None:
        after = exposure.open_positions + exposure.orders_in_flight + 1
        if after > limits.max_open_positions:
            return Breach(Limit.MAX_OPEN_POSITIONS,
                          f"The account may hold at most {limits.max_open_positions} "
                          "open positions and pending orders.")
    loss = -exposure.realised_today
    if limits.max_daily_loss is not None and loss > 0 and loss >= limits.max_daily_loss:
        return Breach(Limit.MAX_DAILY_LOSS,
                      f"Today's loss has reached the limit of {limits.max_daily_loss}.")
    return None
