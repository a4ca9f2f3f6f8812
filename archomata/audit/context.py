"""Who acted and from where, as an audit entry names them: an AuditContext.

A flow takes one ready-made; a handler builds it from its request (`context_of`), the
CLI and background jobs use `AuditContext.system()`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from uuid import UUID

from aiohttp import web

from archomata import keys
from archomata.access import caller
from archomata.access.principal import ActorType


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who acted and from where; built from a request, or by hand for the CLI."""

    actor_type: ActorType
    actor_id: UUID | None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls) -> AuditContext:
        return cls(ActorType.SYSTEM, None)

    def as_user(self, user_id: UUID | None) -> AuditContext:
        """The entries of a sign-in name as actor the person signing in, when known."""
        if user_id is None:
            return self
        return replace(self, actor_type=ActorType.USER, actor_id=user_id)

    def or_user(self, user_id: UUID | None) -> AuditContext:
        """Whoever the request's token names, or, when it names no one (a mailed link, a
        refresh cookie, an invitation, a failed sign-in), the person the flow acts on."""
        return self if self.actor_id is not None else self.as_user(user_id)


def context_of(request: web.Request) -> AuditContext:
    """The request's context: its verified caller, or the system when none (a public
    route: name the person it acts on with `or_user`)."""
    principal = caller.caller_if_any(request)
    return AuditContext(
        actor_type=principal.actor_type if principal else ActorType.SYSTEM,
        actor_id=principal.actor_id if principal else None,
        ip=_inet(request.get(keys.CLIENT_IP) or request.remote),
        user_agent=readable(request.headers.get("User-Agent") or "")[:512] or None,
        request_id=request.get(keys.REQUEST_ID),
    )


def readable(header: str) -> str:
    """A header value as text that can be stored: aiohttp hands bytes that are not UTF-8
    over as lone surrogates, which PostgreSQL, Redis and the JSON logs refuse (a 500
    once); each becomes U+FFFD."""
    return header.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _inet(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None
