"""Configuration: read once from the environment into a frozen, validated `Config`.

A production service refuses to start without the secrets it needs; every message names
the variable at fault. Secrets are wrapped in `Secret`, whose repr never shows the value,
so a config printed into a log or a traceback leaks nothing.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

# Reading each variable is config_parsing's; the names a caller needs are this module's.
from archomata.config_parsing import (
    PREFIX,
    ConfigError,
    Reader,
    Secret,
    audit_key,
    check_origin,
    check_redis_url,
    check_url,
    read_choice,
    read_data_key,
    read_jwt_secrets,
    read_previous_data_keys,
    read_trusted_proxies,
)

__all__ = ["Config", "ConfigError", "Environment", "RateLimit", "SameSite", "Secret",
           "SsoProvider", "WorkerSlot", "audit_key", "default_bcrypt_threads", "load_config"]


def default_bcrypt_threads() -> int:
    """One core fewer than the machine has (at least one): bcrypt saturating every core
    would starve the event loop, and with it every other request."""
    return max(1, (os.cpu_count() or 1) - 1)


class Environment(StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"


class SameSite(StrEnum):
    """SameSite of the refresh cookie. `None` is refused: it would send the cookie on
    cross-site requests, leaving the CSRF defence to the Origin check alone."""

    STRICT = "Strict"
    LAX = "Lax"


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class WorkerSlot:
    """Which of the instance's `serve --workers` processes this is (0 of 1 without
    workers). The instance settings are the instance's, not each worker's: a worker gets
    its `share` of each (archomata.ops.workers.worker_config)."""

    index: int = 0
    count: int = 1

    def share(self, total: int, floor: int = 1) -> int:
        """This worker's part of `total`, at least `floor`: the remainder goes one each
        to the first workers, so the parts sum to `total` (10 over 3: 4, 3, 3) unless
        the floor lifts them (2 over 3: 1, 1, 1)."""
        base, extra = divmod(total, self.count)
        return max(floor, base + (1 if self.index < extra else 0))


@dataclass(frozen=True, slots=True)
class SsoProvider:
    name: str
    client_id: str
    client_secret: Secret[str]
    metadata_url: str


@dataclass(frozen=True, slots=True)
class Config:
    env: Environment
    database_url: Secret[str]
    database_owner_url: Secret[str]
    database_owner_url_is_default: bool
    redis_url: Secret[str]
    jwt_secrets: tuple[tuple[str, Secret[str]], ...]
    data_key: Secret[bytes]
    frontend_origins: tuple[str, ...]
    frontend_url: str
    public_url: str
    smtp_url: Secret[str]
    mail_from: str
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    bcrypt_rounds: int
    refresh_reuse_grace_seconds: int
    host: str
    port: int
    tls_cert: str | None
    tls_key: str | None
    rate_limit_login: RateLimit
    rate_limit_bridge: RateLimit
    rate_limit_api: RateLimit
    sso_providers: tuple[SsoProvider, ...]
    sso_allow_signup: bool
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 604800
    mail_token_ttl_seconds: int = 86400
    password_reset_ttl_seconds: int = 3600
    # Per client IP: /auth/refresh and /auth/switch-org (each session has 10 a minute too).
    rate_limit_refresh: RateLimit = RateLimit(600, 60)
    max_body_bytes: int = 1024 * 1024
    request_timeout_seconds: float = 30.0
    long_poll_timeout_seconds: float = 45.0
    command_lease_seconds: int = 60  # a polled command's, before it is handed out again
    shutdown_grace_seconds: int = 20  # for in-flight requests, once SIGTERM came
    step_up_max_age_seconds: int = 600  # how old a second factor may be on step-up routes
    db_pool_min: int = 2
    db_pool_max: int = 10
    database_pooler: str = ""  # "pgbouncer": no statement kept on a server connection
    bcrypt_threads: int = field(default_factory=lambda: default_bcrypt_threads())
    # Jobs that may wait for the bcrypt pool in each lane (people, API keys) before the
    # next is refused with 503 `busy` (archomata.identity.passwords).
    bcrypt_queue: int = 16
    # Older data keys that still open stored secrets while `rotate-data-key` runs.
    data_key_previous: tuple[Secret[bytes], ...] = ()
    audit_key: Secret[bytes] | None = None  # the audit chain's HMAC key (load_config: required)
    refresh_cookie_samesite: SameSite = SameSite.STRICT
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 75.0
    login_backoff_after: int = 5
    login_backoff_max_seconds: int = 300
    # A response the client takes nothing of for this long is cut (archomata.http.server).
    stream_stall_seconds: float = 30.0
    exports_per_instance: int = 8
    worker: WorkerSlot = WorkerSlot()  # set by `serve --workers` in each worker

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def signing_key(self) -> tuple[str, Secret[str]]:
        return self.jwt_secrets[0]


def _rate_limit(reader: Reader, name: str, default: str) -> RateLimit:
    text = reader.str(name, default)
    count, sep, seconds = text.partition("/")
    try:
        limit = RateLimit(int(count), int(seconds))
    except ValueError:
        raise ConfigError(f"{PREFIX}{name} must look like N/SECONDS") from None
    if not sep or limit.limit < 1 or limit.window_seconds < 1:
        raise ConfigError(f"{PREFIX}{name} must look like N/SECONDS with positive numbers")
    return limit


def _samesite(reader: Reader) -> SameSite:
    text = reader.str("REFRESH_COOKIE_SAMESITE", SameSite.STRICT.value)
    for value in SameSite:
        if text.lower() == value.value.lower():
            return value
    raise ConfigError(f"{PREFIX}REFRESH_COOKIE_SAMESITE must be Strict or Lax")


SSO_DISCOVERY = {
    "google": "https://accounts.google.com/.well-known/openid-configuration",
    "azure": "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
}


def _sso(reader: Reader, production: bool) -> tuple[SsoProvider, ...]:
    providers = []
    for name, discovery in SSO_DISCOVERY.items():
        prefix = f"SSO_{name.upper()}_"
        client_id = reader.raw(prefix + "CLIENT_ID")
        if client_id is None:
            continue
        metadata = check_url(
            prefix + "METADATA_URL", reader.str(prefix + "METADATA_URL", discovery),
            {"http", "https"}, production,
        )
        secret = reader.str(prefix + "CLIENT_SECRET")
        providers.append(SsoProvider(name, client_id, Secret(secret), metadata))
    return tuple(providers)


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Builds the Config from `environ` (default: os.environ) or raises ConfigError."""
    reader = Reader(os.environ if environ is None else environ)
    try:
        env = Environment(reader.str("ENV", Environment.PRODUCTION.value).lower())
    except ValueError:
        raise ConfigError(f"{PREFIX}ENV must be production or development") from None
    production = env is Environment.PRODUCTION
    database_url = check_url("DATABASE_URL", reader.str("DATABASE_URL"),
                             {"postgres", "postgresql"}, production=False)
    owner_url = reader.raw("DATABASE_OWNER_URL")
    frontend_url = check_url("FRONTEND_URL", reader.str("FRONTEND_URL", "http://localhost:5173"),
                             {"http", "https"}, production)
    origins = reader.list("FRONTEND_ORIGINS") or (
        f"{urlsplit(frontend_url).scheme}://{urlsplit(frontend_url).netloc}",
    )
    tls_cert, tls_key = reader.raw("TLS_CERT"), reader.raw("TLS_KEY")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError(f"{PREFIX}TLS_CERT and {PREFIX}TLS_KEY must be set together")
    return Config(
        env=env,
        database_url=Secret(database_url),
        database_owner_url=Secret(
            check_url("DATABASE_OWNER_URL", owner_url, {"postgres", "postgresql"}, False)
            if owner_url else database_url
        ),
        database_owner_url_is_default=owner_url is None,
        redis_url=Secret(check_redis_url(reader.str("REDIS_URL", "redis://127.0.0.1:6379/0"))),
        database_pooler=read_choice(reader, "DATABASE_POOLER", ("", "pgbouncer")),
        jwt_secrets=read_jwt_secrets(reader),
        data_key=read_data_key(reader),
        frontend_origins=tuple(check_origin("FRONTEND_ORIGINS", o, production) for o in origins),
        frontend_url=frontend_url,
        public_url=check_url("PUBLIC_URL", reader.str("PUBLIC_URL", "http://127.0.0.1:8080"),
                             {"http", "https"}, production),
        smtp_url=Secret(check_url("SMTP_URL", reader.str("SMTP_URL", "smtp://127.0.0.1:25"),
                                  {"smtp", "smtps"}, production=False)),
        mail_from=reader.str("MAIL_FROM", "Archomata <no-reply@archomata.local>"),
        trusted_proxies=read_trusted_proxies(reader),
        bcrypt_rounds=reader.int("BCRYPT_ROUNDS", 12, 4, 31),
        refresh_reuse_grace_seconds=reader.int("REFRESH_REUSE_GRACE_SECONDS", 10, 0, 300),
        host=reader.str("HOST", "127.0.0.1"),
        port=reader.int("PORT", 8080, 0, 65535),
        tls_cert=tls_cert,
        tls_key=tls_key,
        rate_limit_login=_rate_limit(reader, "RATE_LIMIT_LOGIN", "10/60"),
        rate_limit_bridge=_rate_limit(reader, "RATE_LIMIT_BRIDGE", "600/60"),
        rate_limit_api=_rate_limit(reader, "RATE_LIMIT_API", "600/60"),
        rate_limit_refresh=_rate_limit(reader, "RATE_LIMIT_REFRESH", "600/60"),
        sso_providers=_sso(reader, production),
        sso_allow_signup=reader.bool("SSO_ALLOW_SIGNUP", True),
        # Below a minute an access token dies in flight; past an hour a stolen one lives
        # too long (its revocation is checked, but its permissions are cached).
        access_token_ttl_seconds=reader.int("ACCESS_TOKEN_SECONDS", 900, 60, 3600),
        # An hour at least (under it the SPA re-logs in all day); 30 days at most.
        refresh_token_ttl_seconds=reader.int("REFRESH_TOKEN_SECONDS", 604800, 3600, 30 * 86400),
        mail_token_ttl_seconds=reader.int("MAIL_TOKEN_TTL_SECONDS", 86400, 60, 30 * 86400),
        password_reset_ttl_seconds=reader.int("PASSWORD_RESET_TTL_SECONDS", 3600, 60, 86400),
        max_body_bytes=reader.int("MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
        request_timeout_seconds=reader.int("REQUEST_TIMEOUT_SECONDS", 30, 1, 600),
        db_pool_min=reader.int("DB_POOL_MIN", 2, 0, 100),
        db_pool_max=reader.int("DB_POOL_MAX", 10, 1, 500),
        bcrypt_threads=reader.int("BCRYPT_THREADS", default_bcrypt_threads(), 1, 64),
        bcrypt_queue=reader.int("BCRYPT_QUEUE", 16, 1, 10_000),
        data_key_previous=read_previous_data_keys(reader),
        audit_key=audit_key(reader.environ),
        refresh_cookie_samesite=_samesite(reader),
        header_timeout_seconds=reader.int("HEADER_TIMEOUT_SECONDS", 10, 1, 300),
        keepalive_timeout_seconds=reader.int("KEEPALIVE_TIMEOUT_SECONDS", 75, 1, 3600),
        login_backoff_after=reader.int("LOGIN_BACKOFF_AFTER", 5, 1, 1000),
        login_backoff_max_seconds=reader.int("LOGIN_BACKOFF_MAX_SECONDS", 300, 1, 3600),
        stream_stall_seconds=reader.int("STREAM_STALL_SECONDS", 30, 1, 3600),
        exports_per_instance=reader.int("EXPORTS_PER_INSTANCE", 8, 1, 1000),
        command_lease_seconds=reader.int("COMMAND_LEASE_SECONDS", 60, 1, 3600),
        shutdown_grace_seconds=reader.int("SHUTDOWN_GRACE_SECONDS", 20, 0, 3600),
        step_up_max_age_seconds=reader.int("STEP_UP_MAX_AGE_SECONDS", 600, 1, 10**9),
    )
