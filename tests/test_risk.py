"""The risk rules on their own: plain values in, the breached limit (or None) out."""

from __future__ import annotations

from decimal import Decimal

import pytest

from archomata.risk import Exposure, Limit, RiskLimits, check

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
