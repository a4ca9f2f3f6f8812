"""Who is on the other end: `request[keys.CLIENT_IP]`, for rate limits, audit and sessions.

The peer address, unless the peer is one of ARCHOMATA_TRUSTED_PROXIES: then
`X-Forwarded-For` is read from the right (each proxy appends the address it saw), trusted
proxies are skipped, and the first untrusted address is the client. Anything to its left
was written by the client itself and is ignored. An entry that is not an address makes
the whole header untrustworthy, and the peer is used instead.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import keys

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR = "X-Forwarded-For"
UNKNOWN = "unknown"


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it: bare, or with a port (`1.2.3.4:5`, `[::1]:5`)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress, trusted: Iterable[Network]) -> bool:
    return any(address in network for network in trusted)


@functools.lru_cache(maxsize=4096)
def _peer_text(peer: str) -> str:
    """The peer as an address is written; a connection's peer asks once, not per request."""
    peer_ip = parse_ip(peer)
    return peer if peer_ip is None else str(peer_ip)


def client_ip_of(peer: str | None, forwarded_for: Sequence[str],
                 trusted: Sequence[Network]) -> str:
    """The client address given the peer, the X-Forwarded-For values and the trusted CIDRs."""
    if not trusted:
        return _peer_text(peer) if peer else UNKNOWN
    peer_ip = parse_ip(peer) if peer else None
    if peer_ip is None:
        return peer or UNKNOWN
    if not is_trusted(peer_ip, trusted):
        return str(peer_ip)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            return str(peer_ip)
        if not is_trusted(address, trusted):
            return str(address)
    # Every hop is one of ours: the leftmost is the furthest we know of.
    first = parse_ip(hops[0]) if hops else None
    return str(first or peer_ip)


def peer_is_trusted_proxy(request: web.Request) -> bool:
    """Whether the directly connected peer is a proxy whose X-Forwarded-* we believe."""
    trusted = request.app[keys.CONFIG].trusted_proxies
    # `trusted` first: `request.remote` asks the transport for its peer every time.
    peer = parse_ip(request.remote) if trusted and request.remote else None
    return peer is not None and is_trusted(peer, trusted)


@web.middleware
async def client_ip_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[keys.CLIENT_IP] = client_ip_of(
        request.remote, request.headers.getall(FORWARDED_FOR, []),
        request.app[keys.CONFIG].trusted_proxies)
    return await handler(request)
