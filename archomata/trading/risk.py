"""Risk limits of an account, checked when an order is placed: plain rules, no I/O.

- `trading_enabled`: false refuses every new order.
- `max_order_volume`: an order's volume may not exceed it.
- `max_open_positions`: the positions the account holds (`Exposure.held`, below) plus
  this order may not exceed it.
- `max_daily_loss`: once today's (UTC) realised loss, from today's deals (profit +
  commission + swap), has reached it, no new order (with 0, any loss stops trading).

A limit of None is no limit. Closing a position only reduces exposure, so it is not
checked here (see archomata.trading.routes.orders).

What the account holds, `Exposure.held`: the agent's last state push is the truth as of
when it arrived, and every order since is counted on top of it, so a fill the agent has
not reported yet is never lost between two pushes:

    held = positions in the last push
         + opening orders in flight (pending or sent: they may fill)
         + opening orders filled since that push (`fills_unreported`)
         - closing orders filled since that push whose position it still shows
           (`closes_unreported`)

"Since that push": the fill was recorded after the push arrived. A push that arrives
after a fill was recorded is taken to show it, open or already closed, and marks it
`reflected` (archomata.trading.store.market): an agent sends an account's state after the
results it has reported for that account (one loop per terminal). A filled opening
order whose broker ticket is a position of the push is already counted there, and a
closing order pending or sent does not reduce yet (it may be rejected). Errs high,
never low: a push that crossed a fill in flight counts that position twice until the
next push.
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
    """What the account holds now (see the module docstring for `held`)."""

    open_positions: int  # in the last state push
    orders_in_flight: int  # opening orders pending or sent
    realised_today: Decimal  # net result of today's deals; negative is a loss
    fills_unreported: int = 0  # opening orders filled since the last push
    closes_unreported: int = 0  # closes filled since the last push, position still shown

    @property
    def held(self) -> int:
        return (self.open_positions + self.orders_in_flight + self.fills_unreported
                - self.closes_unreported)


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
    cap = limits.max_open_positions
    if cap is not None and exposure.held + 1 > cap:
        return Breach(Limit.MAX_OPEN_POSITIONS,
                      f"The account may hold at most {cap} open positions and pending orders.")
    loss = -exposure.realised_today
    if limits.max_daily_loss is not None and loss > 0 and loss >= limits.max_daily_loss:
        return Breach(Limit.MAX_DAILY_LOSS,
                      f"Today's loss has reached the limit of {limits.max_daily_loss}.")
    return None
