"""Who acted and from where, as an audit entry names them: an AuditContext.

A flow takes one ready-made; a handler builds it from its request (`context_of`), the
CLI and background jobs use `AuditContext.system()`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
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


def context_of(request: web.Request, actor_id: UUID | None = None) -> AuditContext:
    """The request's context; `actor_id` names the actor when no token does yet (login)."""
    principal = caller.caller_if_any(request)
    actor: UUID | None
    if principal is not None:
        actor_type, actor = principal.actor_type, principal.actor_id
    else:
        actor_type = ActorType.USER if actor_id else ActorType.SYSTEM
        actor = actor_id
    return AuditContext(
        actor_type=actor_type,
        actor_id=actor,
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
