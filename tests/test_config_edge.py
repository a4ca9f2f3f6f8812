"""Configuration of the edge: refresh cookie SameSite, connection timeouts, login backoff."""

from __future__ import annotations

import pytest

from archomata.config import ConfigError, SameSite, load_config

GOOD = {
    "ARCHOMATA_DATABASE_URL": "postgresql://app:pw@127.0.0.1/archomata",
    "ARCHOMATA_JWT_SECRETS": "k1:" + "a" * 32,
    "ARCHOMATA_DATA_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "ARCHOMATA_AUDIT_KEY": "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",
}


class TestEdgeConfig:
    def test_defaults(self) -> None:
        config = load_config(GOOD)
        assert config.refresh_cookie_samesite is SameSite.STRICT
        assert str(config.refresh_cookie_samesite) == "Strict"
        assert (config.header_timeout_seconds, config.keepalive_timeout_seconds) == (10, 75)
        assert (config.login_backoff_after, config.login_backoff_max_seconds) == (5, 300)
        assert (config.stream_stall_seconds, config.exports_per_instance) == (30, 8)

    @pytest.mark.parametrize(("text", "value"), [("lax", SameSite.LAX), ("Lax", SameSite.LAX),
                                                 ("STRICT", SameSite.STRICT)])
    def test_samesite_strict_or_lax(self, text: str, value: SameSite) -> None:
        config = load_config({**GOOD, "ARCHOMATA_REFRESH_COOKIE_SAMESITE": text})
        assert config.refresh_cookie_samesite is value

    @pytest.mark.parametrize(("variable", "value"), [
        ("ARCHOMATA_REFRESH_COOKIE_SAMESITE", "None"),
        ("ARCHOMATA_REFRESH_COOKIE_SAMESITE", "whatever"),
        ("ARCHOMATA_HEADER_TIMEOUT_SECONDS", "0"),
        ("ARCHOMATA_KEEPALIVE_TIMEOUT_SECONDS", "forever"),
        ("ARCHOMATA_LOGIN_BACKOFF_AFTER", "0"),
        ("ARCHOMATA_LOGIN_BACKOFF_MAX_SECONDS", "86400"),
        ("ARCHOMATA_STREAM_STALL_SECONDS", "0"),
        ("ARCHOMATA_EXPORTS_PER_INSTANCE", "none"),
        ("ARCHOMATA_COMMAND_LEASE_SECONDS", "0"),
        ("ARCHOMATA_SHUTDOWN_GRACE_SECONDS", "-1"),
    ])
    def test_bad_values_stop_start_naming_the_variable(self, variable: str,
                                                       value: str) -> None:
        with pytest.raises(ConfigError, match=variable):
            load_config({**GOOD, variable: value})

    def test_values_are_read(self) -> None:
        config = load_config({**GOOD, "ARCHOMATA_HEADER_TIMEOUT_SECONDS": "5",
                              "ARCHOMATA_KEEPALIVE_TIMEOUT_SECONDS": "30",
                              "ARCHOMATA_LOGIN_BACKOFF_AFTER": "3",
                              "ARCHOMATA_LOGIN_BACKOFF_MAX_SECONDS": "120",
                              "ARCHOMATA_STREAM_STALL_SECONDS": "5",
                              "ARCHOMATA_EXPORTS_PER_INSTANCE": "2",
                              "ARCHOMATA_COMMAND_LEASE_SECONDS": "7",
                              "ARCHOMATA_SHUTDOWN_GRACE_SECONDS": "3"})
        assert (config.header_timeout_seconds, config.keepalive_timeout_seconds) == (5, 30)
        assert (config.login_backoff_after, config.login_backoff_max_seconds) == (3, 120)
        assert (config.stream_stall_seconds, config.exports_per_instance) == (5, 2)
        assert (config.command_lease_seconds, config.shutdown_grace_seconds) == (7, 3)
        defaults = load_config(GOOD)
        assert (defaults.command_lease_seconds, defaults.shutdown_grace_seconds) == (60, 20)


class TestTokenLifetimes:
    def test_defaults_are_the_contracts(self) -> None:
        config = load_config(GOOD)
        assert (config.access_token_ttl_seconds, config.refresh_token_ttl_seconds) == (
            900, 604800)

    @pytest.mark.parametrize(("access", "refresh"), [
        ("60", "3600"), ("3600", "2592000"), (" 300 ", "86400")])
    def test_the_bounds_are_accepted(self, access: str, refresh: str) -> None:
        config = load_config({**GOOD, "ARCHOMATA_ACCESS_TOKEN_SECONDS": access,
                              "ARCHOMATA_REFRESH_TOKEN_SECONDS": refresh})
        assert (config.access_token_ttl_seconds, config.refresh_token_ttl_seconds) == (
            int(access), int(refresh))

    @pytest.mark.parametrize(("variable", "value", "says"), [
        ("ARCHOMATA_ACCESS_TOKEN_SECONDS", "59", "between 60 and 3600"),
        ("ARCHOMATA_ACCESS_TOKEN_SECONDS", "3601", "between 60 and 3600"),
        ("ARCHOMATA_ACCESS_TOKEN_SECONDS", "0", "between 60 and 3600"),
        ("ARCHOMATA_ACCESS_TOKEN_SECONDS", "15m", "an integer"),
        ("ARCHOMATA_ACCESS_TOKEN_SECONDS", "900.5", "an integer"),
        ("ARCHOMATA_REFRESH_TOKEN_SECONDS", "3599", "between 3600 and 2592000"),
        ("ARCHOMATA_REFRESH_TOKEN_SECONDS", "2592001", "between 3600 and 2592000"),
        ("ARCHOMATA_REFRESH_TOKEN_SECONDS", "-604800", "between 3600 and 2592000"),
        ("ARCHOMATA_REFRESH_TOKEN_SECONDS", "7d", "an integer"),
    ])
    def test_out_of_range_or_not_an_integer_refuses_to_start(
            self, variable: str, value: str, says: str) -> None:
        with pytest.raises(ConfigError, match=f"^{variable} must be {says}"):
            load_config({**GOOD, variable: value})
