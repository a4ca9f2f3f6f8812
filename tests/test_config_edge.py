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
