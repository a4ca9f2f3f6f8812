"""The service's Redis clients, from `ARCHOMATA_REDIS_URL`.

`redis://` and `rediss://` name one server. `redis+sentinel://[:password@]host:port
[,host:port...]/service_name[/db]` (contract §5) names Redis Sentinels instead: the client
asks them which server is the master of `service_name` on every new connection, and a
connection to a master since demoted (READONLY) is dropped, so it follows a failover. The
password is the master's; the Sentinels are asked without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None


def sentinel_target(url: str) -> SentinelTarget:
    """Parses a `redis+sentinel://` URL; ValueError says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME or not sep:
        raise ValueError(f"must be a {SENTINEL_SCHEME}:// URL")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if at else None
    sentinels = tuple(_address(entry) for entry in hosts.split(","))
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError("must name the Sentinel service (.../service_name[/db])")
    if db and not db.isdigit():
        raise ValueError("must end with a database number, if anything")
    return SentinelTarget(sentinels, unquote(service), int(db or 0), password or None)


def checked_url(url: str) -> str:
    """`url` if it names Redis as `connect` takes it; else ValueError, which says why."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        sentinel_target(url)
    elif urlsplit(url).scheme not in ("redis", "rediss") or not urlsplit(url).hostname:
        raise ValueError(f"must be a URL with scheme redis, rediss or {SENTINEL_SCHEME}")
    return url.rstrip("/")


def _address(entry: str) -> tuple[str, int]:
    host, colon, port = entry.strip().rpartition(":")
    if not colon:
        host, port = port, str(SENTINEL_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must name each Sentinel as host:port, not {entry!r}")
    return host.strip("[]"), int(port)


def connect(url: str, **options: Any) -> Redis:
    """A client for `url`, with the connection `options` of redis-py (timeouts, retry,
    redis_connect_func...), whichever kind of URL it is."""
    if not url.startswith(SENTINEL_SCHEME + "://"):
        return Redis.from_url(url, **options)
    target = sentinel_target(url)
    timeouts: dict[str, Any] = {name: options[name] for name in
                                ("socket_timeout", "socket_connect_timeout") if name in options}
    # Any: redis-py's typing of Sentinel differs between its releases.
    sentinel_class: Any = Sentinel
    sentinel = sentinel_class(list(target.sentinels), sentinel_kwargs=timeouts)
    client: Redis = sentinel.master_for(target.service, db=target.db,
                                        password=target.password, **options)
    return client


async def close(client: Redis) -> None:
    """Closes `client`, and the connections to its Sentinels if it has any."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    if manager is not None:
        for sentinel in manager.sentinels:
            await sentinel.aclose()
