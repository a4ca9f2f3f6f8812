from __future__ import annotations

import pytest

from archomata.config import ConfigError, Environment, load_config

GOOD = {
    "ARCHOMATA_DATABASE_URL": "postgresql://app:pw@127.0.0.1/archomata",
    "ARCHOMATA_JWT_SECRETS": "k1:" + "a" * 32 + ",k0:" + "b" * 40,
    "ARCHOMATA_DATA_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    "ARCHOMATA_AUDIT_KEY": "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",
}


def config_with(**changes: str | None) -> object:
    environ = {**GOOD, **{k: v for k, v in changes.items() if v is not None}}
    for key, value in changes.items():
        if value is None:
            environ.pop(key, None)
    return load_config(environ)


class TestLoadConfig:
    def test_defaults_are_production(self) -> None:
        config = config_with()
        assert config.env is Environment.PRODUCTION
        assert config.bcrypt_rounds == 12
        assert config.refresh_reuse_grace_seconds == 10
        assert (config.host, config.port) == ("127.0.0.1", 8080)
        assert config.signing_key[0] == "k1"
        assert config.database_owner_url_is_default

    @pytest.mark.parametrize(("variable", "value", "message"), [
        ("ARCHOMATA_JWT_SECRETS", None, "ARCHOMATA_JWT_SECRETS is required"),
        ("ARCHOMATA_JWT_SECRETS", "k1:short", "ARCHOMATA_JWT_SECRETS.*at least 32"),
        ("ARCHOMATA_JWT_SECRETS", "nokid", "ARCHOMATA_JWT_SECRETS.*kid:secret"),
        ("ARCHOMATA_DATA_KEY", None, "ARCHOMATA_DATA_KEY is required"),
        ("ARCHOMATA_DATA_KEY", "c2hvcnQ=", "ARCHOMATA_DATA_KEY.*32 bytes"),
        ("ARCHOMATA_DATA_KEY", "not base64!", "ARCHOMATA_DATA_KEY must be base64"),
        ("ARCHOMATA_AUDIT_KEY", None, "ARCHOMATA_AUDIT_KEY is required"),
        ("ARCHOMATA_AUDIT_KEY", "c2hvcnQ=", "ARCHOMATA_AUDIT_KEY.*32 bytes"),
        ("ARCHOMATA_AUDIT_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
         "ARCHOMATA_AUDIT_KEY must not be ARCHOMATA_DATA_KEY"),
        ("ARCHOMATA_BACKUP_KEY", "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=",
         "ARCHOMATA_AUDIT_KEY must not be ARCHOMATA_BACKUP_KEY"),
        ("ARCHOMATA_DATABASE_URL", None, "ARCHOMATA_DATABASE_URL is required"),
        ("ARCHOMATA_FRONTEND_URL", "http://app.example.com", "ARCHOMATA_FRONTEND_URL.*https"),
        ("ARCHOMATA_BCRYPT_ROUNDS", "3", "ARCHOMATA_BCRYPT_ROUNDS"),
        ("ARCHOMATA_RATE_LIMIT_LOGIN", "ten", "ARCHOMATA_RATE_LIMIT_LOGIN"),
        ("ARCHOMATA_TLS_CERT", "/tmp/cert.pem", "TLS_KEY must be set together"),
        ("ARCHOMATA_ENV", "staging", "ARCHOMATA_ENV"),
        ("ARCHOMATA_REDIS_URL", "memcached://127.0.0.1", "ARCHOMATA_REDIS_URL must be a URL"),
        ("ARCHOMATA_REDIS_URL", "redis+sentinel://:pw@h1:26379/", "REDIS_URL must name the"),
        ("ARCHOMATA_REDIS_URL", "redis+sentinel://h1:x/m", "REDIS_URL must name each"),
        ("ARCHOMATA_REDIS_URL", "redis+sentinel://h1/m/zero", "REDIS_URL must end with"),
        ("ARCHOMATA_DATABASE_POOLER", "pgpool", "ARCHOMATA_DATABASE_POOLER must be one of"),
    ])
    def test_bad_setting_stops_start_naming_the_variable(
            self, variable: str, value: str | None, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            config_with(**{variable: value})

    def test_a_sentinel_url_names_its_sentinels_service_and_database(self) -> None:
        from archomata.redis_client import sentinel_target

        url = "redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-3/cache/2"
        assert config_with(ARCHOMATA_REDIS_URL=url).redis_url.reveal() == url
        target = sentinel_target(url)
        assert target.sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
        assert (target.service, target.db, target.password) == ("cache", 2, "p@ss")
        assert config_with(ARCHOMATA_DATABASE_POOLER="PgBouncer").database_pooler == "pgbouncer"
        assert config_with().database_pooler == ""

    def test_http_is_accepted_on_loopback_in_production(self) -> None:
        config = config_with(ARCHOMATA_FRONTEND_URL="http://127.0.0.1:5173")
        assert config.frontend_url == "http://127.0.0.1:5173"

    def test_development_accepts_http_elsewhere(self) -> None:
        config = config_with(ARCHOMATA_ENV="development",
                             ARCHOMATA_FRONTEND_URL="http://app.internal")
        assert config.frontend_origins == ("http://app.internal",)

    def test_secrets_never_print(self) -> None:
        config = config_with()
        text = repr(config)
        assert "a" * 32 not in text
        assert "pw@" not in text
        assert "AAECAwQF" not in text

    def test_no_secret_of_any_setting_prints(self) -> None:
        # Every setting that can carry a secret, each with a distinctive one.
        secrets = {
            "ARCHOMATA_DATABASE_URL": ("postgresql://app:{}@127.0.0.1/archomata", "dbpass1x"),
            "ARCHOMATA_DATABASE_OWNER_URL": ("postgresql://own:{}@127.0.0.1/a", "ownpass2x"),
            "ARCHOMATA_REDIS_URL": ("redis://:{}@127.0.0.1:6379/0", "redispass3x"),
            "ARCHOMATA_SMTP_URL": ("smtp://mailer:{}@127.0.0.1:25", "smtppass4x"),
            "ARCHOMATA_JWT_SECRETS": ("k1:{}", "jwtsecret5x" + "j" * 32),
            "ARCHOMATA_DATA_KEY": ("{}", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            "ARCHOMATA_DATA_KEY_PREVIOUS": ("{}", "Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA="),
            "ARCHOMATA_AUDIT_KEY": ("{}", "YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8="),
            "ARCHOMATA_SSO_GOOGLE_CLIENT_SECRET": ("{}", "googlesecret6x"),
            "ARCHOMATA_SSO_AZURE_CLIENT_SECRET": ("{}", "azuresecret7x"),
        }
        config = config_with(ARCHOMATA_SSO_GOOGLE_CLIENT_ID="g-id",
                             ARCHOMATA_SSO_AZURE_CLIENT_ID="a-id",
                             **{name: form.format(secret)
                                for name, (form, secret) in secrets.items()})
        for text in (repr(config), str(config)):
            for name, (_, secret) in secrets.items():
                assert secret[:10] not in text, name
        assert config.smtp_url.reveal() == "smtp://mailer:smtppass4x@127.0.0.1:25"
