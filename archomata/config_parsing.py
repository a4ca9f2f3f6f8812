"""Reading the `ARCHOMATA_*` variables for archomata.config: the reader, each value's
check (URLs, origins, keys, secrets, networks), the error that names the variable at
fault, and the `Secret` wrapper that keeps a value out of logs and tracebacks.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import ipaddress
from collections.abc import Mapping
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from archomata.redis_client import checked_url

T = TypeVar("T")

PREFIX = "ARCHOMATA_"
MIN_JWT_SECRET_CHARS = 32
DATA_KEY_BYTES = 32
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


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


class Reader:
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


def check_url(name: str, url: str, schemes: set[str], production: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        wanted = " or ".join(sorted(schemes))
        raise ConfigError(f"{PREFIX}{name} must be a URL with scheme {wanted}")
    if production and parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"{PREFIX}{name} must use https outside loopback hosts")
    return url.rstrip("/")


def check_redis_url(url: str) -> str:
    try:
        return checked_url(url)
    except ValueError as exc:  # its message names no password
        raise ConfigError(f"{PREFIX}REDIS_URL {exc}") from None


def read_choice(reader: Reader, name: str, choices: tuple[str, ...]) -> str:
    if (value := reader.str(name, choices[0]).strip().lower()) not in choices:
        raise ConfigError(f"{PREFIX}{name} must be one of: {', '.join(c for c in choices if c)}")
    return value


def check_origin(name: str, origin: str, production: bool) -> str:
    origin = check_url(name, origin, {"http", "https"}, production)
    parts = urlsplit(origin)
    if parts.path or parts.query or parts.fragment:
        raise ConfigError(f"{PREFIX}{name} entries must be bare origins such as https://app.example")
    return origin


def read_jwt_secrets(reader: Reader) -> tuple[tuple[str, Secret[str]], ...]:
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


def read_data_key(reader: Reader) -> Secret[bytes]:
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


def read_previous_data_keys(reader: Reader) -> tuple[Secret[bytes], ...]:
    return tuple(_decode_data_key("DATA_KEY_PREVIOUS", text)
                 for text in reader.list("DATA_KEY_PREVIOUS"))


def read_trusted_proxies(reader: Reader
                         ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(c, strict=False) for c in reader.list("TRUSTED_PROXIES"))
    except ValueError:
        raise ConfigError(f"{PREFIX}TRUSTED_PROXIES must be comma-separated CIDRs") from None
