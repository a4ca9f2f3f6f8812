"""Configuration: read once from the environment into a frozen, validated `Config`.

A production service refuses to start without the secrets it needs; every message names
the variable at fault. Secrets are wrapped in `Secret`, whose repr never shows the value,
so a config printed into a log or a traceback leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from archomata.redis_client import checked_url

T = TypeVar("T")

PREFIX = "ARCHOMATA_"
MIN_JWT_SECRET_CHARS = 32
DATA_KEY_BYTES = 32
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def default_bcrypt_threads() -> int:
    """One core fewer than the machine has (at least one): bcrypt saturating every core
    would starve the event loop, and with it every other request."""
    return max(1, (os.cpu_count() or 1) - 1)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


class Environment(StrEnum):
    PRODUCTION = "production"
    DEVELOPMENT = "development"


class SameSite(StrEnum):
    """SameSite of the refresh cookie. `None` is refused: it would send the cookie on
    cross-site requests, leaving the CSRF defence to the Origin check alone."""

    STRICT = "Strict"
    LAX = "Lax"


class Secret(Generic[T]):
    """A value that must not be printed: repr and str hide it."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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


class _Reader:
    """Reads `ARCHOMATA_*` variables, turning every problem into a ConfigError."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def raw(self, name: str) -> str | None:
        value = self.environ.get(PREFIX + name)
        return value.strip() if value is not None and value.strip() else None

    def str(self, name: str, default: str | None = None) -> str:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{PREFIX}{name} is required")
            return default
        return value

    def int(self, name: builtins.str, default: builtins.int, low: builtins.int,
            high: builtins.int) -> builtins.int:
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be an integer") from None
        if not low <= value <= high:
            raise ConfigError(f"{PREFIX}{name} must be between {low} and {high}")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        text = self.raw(name)
        if text is None:
            return default
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{PREFIX}{name} must be true or false")

    def list(self, name: builtins.str, default: builtins.str = "") -> tuple[builtins.str, ...]:
        text = self.raw(name) or default
        return tuple(item.strip() for item in text.split(",") if item.strip())


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, url: str, schemes: set[str], production: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        wanted = " or ".join(sorted(schemes))
        raise ConfigError(f"{PREFIX}{name} must be a URL with scheme {wanted}")
    if production and parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"{PREFIX}{name} must use https outside loopback hosts")
    return url.rstrip("/")


def _redis_url(url: str) -> str:
    try:
        return checked_url(url)
    except ValueError as exc:  # its message names no password
        raise ConfigError(f"{PREFIX}REDIS_URL {exc}") from None


def _choice(reader: _Reader, name: str, choices: tuple[str, ...]) -> str:
    if (value := reader.str(name, choices[0]).strip().lower()) not in choices:
        raise ConfigError(f"{PREFIX}{name} must be one of: {', '.join(c for c in choices if c)}")
    return value


def _check_origin(name: str, origin: str, production: bool) -> str:
    origin = _check_url(name, origin, {"http", "https"}, production)
    parts = urlsplit(origin)
    if parts.path or parts.query or parts.fragment:
        raise ConfigError(f"{PREFIX}{name} entries must be bare origins such as https://app.example")
    return origin


def _jwt_secrets(reader: _Reader) -> tuple[tuple[str, Secret[str]], ...]:
    entries = reader.list("JWT_SECRETS")
    if not entries:
        raise ConfigError(f"{PREFIX}JWT_SECRETS is required (kid:secret[,kid:secret...])")
    keys: list[tuple[str, Secret[str]]] = []
    for entry in entries:
        kid, sep, secret = entry.partition(":")
        if not sep or not kid or not secret:
            raise ConfigError(f"{PREFIX}JWT_SECRETS entries must look like kid:secret")
        if len(secret) < MIN_JWT_SECRET_CHARS:
            raise ConfigError(f"{PREFIX}JWT_SECRETS secret for kid {kid!r} must be at least "
                              f"{MIN_JWT_SECRET_CHARS} characters")
        if kid in {k for k, _ in keys}:
            raise ConfigError(f"{PREFIX}JWT_SECRETS repeats kid {kid!r}")
        keys.append((kid, Secret(secret)))
    return tuple(keys)


def _data_key(reader: _Reader) -> Secret[bytes]:
    text = reader.raw("DATA_KEY")
    if text is None:
        raise ConfigError(f"{PREFIX}DATA_KEY is required (base64 of {DATA_KEY_BYTES} bytes)")
    return _decode_data_key("DATA_KEY", text)


def _decode_data_key(name: str, text: str) -> Secret[bytes]:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{PREFIX}{name} must be base64") from None
    if len(key) != DATA_KEY_BYTES:
        raise ConfigError(f"{PREFIX}{name} must decode to exactly {DATA_KEY_BYTES} bytes")
    return Secret(key)


def audit_key(environ: Mapping[str, str]) -> Secret[bytes]:
    """ARCHOMATA_AUDIT_KEY: the audit chain's HMAC key (archomata.audit.keyed), never the
    data or backup key, each key having one use. Required wherever entries are written
    or verified: an entry is never written unkeyed."""
    name = f"{PREFIX}AUDIT_KEY"
    text = (environ.get(name) or "").strip()
    if not text:
        raise ConfigError(f"{name} is required (base64 of {DATA_KEY_BYTES} bytes)")
    key = _decode_data_key("AUDIT_KEY", text).reveal()
    for other in ("DATA_KEY", "BACKUP_KEY"):
        try:
            same = base64.b64decode((environ.get(PREFIX + other) or "").strip(),
                                    validate=True) == key
        except (binascii.Error, ValueError):
            same = False
        if same:
            raise ConfigError(f"{name} must not be {PREFIX}{other}: each key has one use")
    return Secret(key)


def _previous_data_keys(reader: _Reader) -> tuple[Secret[bytes], ...]:
    return tuple(_decode_data_key("DATA_KEY_PREVIOUS", text)
                 for text in reader.list("DATA_KEY_PREVIOUS"))


def _rate_limit(reader: _Reader, name: str, default: str) -> RateLimit:
    text = reader.str(name, default)
    count, sep, seconds = text.partition("/")
    try:
        limit = RateLimit(int(count), int(seconds))
    except ValueError:
        raise ConfigError(f"{PREFIX}{name} must look like N/SECONDS") from None
    if not sep or limit.limit < 1 or limit.window_seconds < 1:
        raise ConfigError(f"{PREFIX}{name} must look like N/SECONDS with positive numbers")
    return limit


def _samesite(reader: _Reader) -> SameSite:
    text = reader.str("REFRESH_COOKIE_SAMESITE", SameSite.STRICT.value)
    for value in SameSite:
        if text.lower() == value.value.lower():
            return value
    raise ConfigError(f"{PREFIX}REFRESH_COOKIE_SAMESITE must be Strict or Lax")


def _trusted_proxies(reader: _Reader) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(c, strict=False) for c in reader.list("TRUSTED_PROXIES"))
    except ValueError:
        raise ConfigError(f"{PREFIX}TRUSTED_PROXIES must be comma-separated CIDRs") from None


SSO_DISCOVERY = {
    "google": "https://accounts.google.com/.well-known/openid-configuration",
    "azure": "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
}


def _sso(reader: _Reader, production: bool) -> tuple[SsoProvider, ...]:
    providers = []
    for name, discovery in SSO_DISCOVERY.items():
        prefix = f"SSO_{name.upper()}_"
        client_id = reader.raw(prefix + "CLIENT_ID")
        if client_id is None:
            continue
        metadata = _check_url(
            prefix + "METADATA_URL", reader.str(prefix + "METADATA_URL", discovery),
            {"http", "https"}, production,
        )
        secret = reader.str(prefix + "CLIENT_SECRET")
        providers.append(SsoProvider(name, client_id, Secret(secret), metadata))
    return tuple(providers)


def load_config(environ: Mapping[str, str] | None = None) -> Config:
    """Builds the Config from `environ` (default: os.environ) or raises ConfigError."""
    reader = _Reader(os.environ if environ is None else environ)
    try:
        env = Environment(reader.str("ENV", Environment.PRODUCTION.value).lower())
    except ValueError:
        raise ConfigError(f"{PREFIX}ENV must be production or development") from None
    production = env is Environment.PRODUCTION
    database_url = _check_url("DATABASE_URL", reader.str("DATABASE_URL"),
                              {"postgres", "postgresql"}, production=False)
    owner_url = reader.raw("DATABASE_OWNER_URL")
    frontend_url = _check_url("FRONTEND_URL", reader.str("FRONTEND_URL", "http://localhost:5173"),
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
            _check_url("DATABASE_OWNER_URL", owner_url, {"postgres", "postgresql"}, False)
            if owner_url else database_url
        ),
        database_owner_url_is_default=owner_url is None,
        redis_url=Secret(_redis_url(reader.str("REDIS_URL", "redis://127.0.0.1:6379/0"))),
        database_pooler=_choice(reader, "DATABASE_POOLER", ("", "pgbouncer")),
        jwt_secrets=_jwt_secrets(reader),
        data_key=_data_key(reader),
        frontend_origins=tuple(_check_origin("FRONTEND_ORIGINS", o, production) for o in origins),
        frontend_url=frontend_url,
        public_url=_check_url("PUBLIC_URL", reader.str("PUBLIC_URL", "http://127.0.0.1:8080"),
                              {"http", "https"}, production),
        smtp_url=Secret(_check_url("SMTP_URL", reader.str("SMTP_URL", "smtp://127.0.0.1:25"),
                                   {"smtp", "smtps"}, production=False)),
        mail_from=reader.str("MAIL_FROM", "Archomata <no-reply@archomata.local>"),
        trusted_proxies=_trusted_proxies(reader),
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
        mail_token_ttl_seconds=reader.int("MAIL_TOKEN_TTL_SECONDS", 86400, 60, 30 * 86400),
        password_reset_ttl_seconds=reader.int("PASSWORD_RESET_TTL_SECONDS", 3600, 60, 86400),
        max_body_bytes=reader.int("MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
        request_timeout_seconds=reader.int("REQUEST_TIMEOUT_SECONDS", 30, 1, 600),
        db_pool_min=reader.int("DB_POOL_MIN", 2, 0, 100),
        db_pool_max=reader.int("DB_POOL_MAX", 10, 1, 500),
        bcrypt_threads=reader.int("BCRYPT_THREADS", default_bcrypt_threads(), 1, 64),
        bcrypt_queue=reader.int("BCRYPT_QUEUE", 16, 1, 10_000),
        data_key_previous=_previous_data_keys(reader),
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
