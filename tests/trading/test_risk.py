"""The risk rules on their own: plain values in, the breached limit (or None) out."""

from __future__ import annotations

from decimal import Decimal

import pytest

from archomata.trading.risk import Exposure, Limit, RiskLimits, check

FLAT = Exposure(open_positions=0, orders_in_flight=0, realised_today=Decimal(0))


class TestCheck:
    def test_new_account_defaults_allow_any_order(self) -> None:
        assert check(RiskLimits(), Exposure(500, 500, Decimal("-1e9")), Decimal(1000)) is None

    def test_trading_disabled_refuses_everything_first(self) -> None:
        limits = RiskLimits(trading_enabled=False, max_order_volume=Decimal(1))
        breach = check(limits, FLAT, Decimal(5))
        assert breach is not None and breach.limit is Limit.TRADING_ENABLED

    @pytest.mark.parametrize(("volume", "breached"), [("1.00", False), ("1.000001", True)])
    def test_max_order_volume_is_inclusive(self, volume: str, breached: bool) -> None:
        breach = check(RiskLimits(max_order_volume=Decimal("1")), FLAT, Decimal(volume))
        assert (breach is not None and breach.limit is Limit.MAX_ORDER_VOLUME) is breached

    @pytest.mark.parametrize(("positions", "in_flight", "breached"),
                             [(1, 0, False), (0, 2, True), (2, 0, True), (0, 0, False)])
    def test_max_open_positions_counts_orders_in_flight(self, positions: int, in_flight: int,
                                                        breached: bool) -> None:
        exposure = Exposure(positions, in_flight, Decimal(0))
        breach = check(RiskLimits(max_open_positions=2), exposure, Decimal(1))
        assert (breach is not None and breach.limit is Limit.MAX_OPEN_POSITIONS) is breached

    def test_zero_open_positions_allows_nothing(self) -> None:
        breach = check(RiskLimits(max_open_positions=0), FLAT, Decimal(1))
        assert breach is not None and breach.limit is Limit.MAX_OPEN_POSITIONS

    @pytest.mark.parametrize(("realised", "breached"),
                             [("-99.99", False), ("-100", True), ("-150", True), ("250", False)])
    def test_max_daily_loss_stops_trading_once_reached(self, realised: str,
                                                       breached: bool) -> None:
        exposure = Exposure(0, 0, Decimal(realised))
        breach = check(RiskLimits(max_daily_loss=Decimal(100)), exposure, Decimal(1))
        assert (breach is not None and breach.limit is Limit.MAX_DAILY_LOSS) is breached

    def test_zero_daily_loss_allows_trading_until_the_first_loss(self) -> None:
        limits = RiskLimits(max_daily_loss=Decimal(0))
        assert check(limits, FLAT, Decimal(1)) is None
        assert check(limits, Exposure(0, 0, Decimal("-0.01")), Decimal(1)) is not None

    def test_breach_message_names_the_limit_value(self) -> None:
        breach = check(RiskLimits(max_order_volume=Decimal("2.5")), FLAT, Decimal(3))
        assert breach is not None and "2.5" in breach.message


class TestHeld:
    """What the account holds: the last push, plus what was ordered or filled since."""

    @pytest.mark.parametrize(("exposure", "held"), [
        (Exposure(2, 0, Decimal(0)), 2),  # the push alone
        (Exposure(0, 1, Decimal(0)), 1),  # an opening order in flight
        (Exposure(0, 0, Decimal(0), fills_unreported=3), 3),  # filled since the push
        (Exposure(1, 1, Decimal(0), fills_unreported=1), 3),
        (Exposure(2, 0, Decimal(0), closes_unreported=1), 1),  # closed since the push
        (Exposure(1, 0, Decimal(0), fills_unreported=1, closes_unreported=1), 1),
    ])
    def test_held_adds_fills_since_the_push_and_takes_off_closes(
            self, exposure: Exposure, held: int) -> None:
        assert exposure.held == held

    def test_a_fill_not_yet_pushed_counts_against_max_open_positions(self) -> None:
        limits = RiskLimits(max_open_positions=1)
        filled = Exposure(0, 0, Decimal(0), fills_unreported=1)
        breach = check(limits, filled, Decimal(1))
        assert breach is not None and breach.limit is Limit.MAX_OPEN_POSITIONS
        assert check(limits, FLAT, Decimal(1)) is None

    def test_a_filled_close_frees_its_place(self) -> None:
        limits = RiskLimits(max_open_positions=1)
        assert check(limits, Exposure(1, 0, Decimal(0)), Decimal(1)) is not None
        closed = Exposure(1, 0, Decimal(0), closes_unreported=1)
        assert check(limits, closed, Decimal(1)) is None
