"""The audit primitive: `record(tx, request, action, ...)` writes one entry inside the
caller's transaction, so an entry exists exactly when its change committed.

Actor, IP, user agent and request id come from the request. `details` must never hold a
secret: keys that name one are replaced by "[redacted]" as a last line of defence.

The database appends each entry to its org's hash chain as it is inserted (a trigger,
sql/004_audit_chain.sql): it takes the chain's next seq, links the previous entry's hash
and stamps `occurred_at`, holding the org's chain head until the transaction ends, so
record() late in a transaction keeps that wait short. `archomata audit verify` checks
the chains (archomata/audit_chain.py).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import keys
from archomata.db import Tx
from archomata.security.principal import ActorType


class AuditAction(StrEnum):
    ACCOUNT_CREATED = "account.created"
    ACCOUNT_DELETED = "account.deleted"
    ACCOUNT_UPDATED = "account.updated"
    AGENT_CREATED = "agent.created"
    AGENT_CREDENTIALS_FETCHED = "agent.credentials_fetched"
    AGENT_DELETED = "agent.deleted"
    AGENT_KEY_ROTATED = "agent.key_rotated"
    AUDIT_EXPORTED = "audit.exported"
    AUTH_EMAIL_VERIFICATION_SENT = "auth.email.verification_sent"
    AUTH_EMAIL_VERIFIED = "auth.email.verified"
    AUTH_LOGIN_FAILED = "auth.login.failed"
    AUTH_LOGIN_SUCCEEDED = "auth.login.succeeded"
    AUTH_LOGOUT = "auth.logout"
    AUTH_LOGOUT_ALL = "auth.logout_all"
    AUTH_ORG_SWITCHED = "auth.org.switched"
    AUTH_PASSWORD_CHANGED = "auth.password.changed"
    AUTH_PASSWORD_RESET_COMPLETED = "auth.password_reset.completed"
    AUTH_PASSWORD_RESET_REQUESTED = "auth.password_reset.requested"
    AUTH_REFRESH_REUSE_DETECTED = "auth.refresh.reuse_detected"
    AUTH_SESSION_REVOKED = "auth.session.revoked"
    AUTH_SSO_LINKED = "auth.sso.linked"
    AUTH_SSO_LOGIN = "auth.sso.login"
    GROUP_CREATED = "group.created"
    GROUP_DELETED = "group.deleted"
    GROUP_MEMBERS_SET = "group.members_set"
    GROUP_ROLES_SET = "group.roles_set"
    GROUP_UPDATED = "group.updated"
    MEMBER_INVITATION_REVOKED = "member.invitation_revoked"
    MEMBER_INVITED = "member.invited"
    MEMBER_JOINED = "member.joined"
    MEMBER_REMOVED = "member.removed"
    MEMBER_UPDATED = "member.updated"
    ORDER_CANCELLED = "order.cancelled"
    ORDER_CREATED = "order.created"
    ORDER_EXECUTED = "order.executed"
    ORDER_REJECTED = "order.rejected"
    ORG_DISABLED = "org.disabled"
    ORG_ENABLED = "org.enabled"
    ORG_UPDATED = "org.updated"
    RISK_LIMITS_UPDATED = "risk_limits.updated"
    ROLE_ASSIGNED = "role.assigned"
    STRATEGY_CREATED = "strategy.created"
    STRATEGY_DELETED = "strategy.deleted"
    STRATEGY_UPDATED = "strategy.updated"
    USER_CREATED = "user.created"
    USER_REGISTERED = "user.registered"
    USER_UPDATED = "user.updated"


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
    principal = request.get(keys.PRINCIPAL)
    if principal is not None:
        actor_type, actor = principal.actor_type, principal.actor_id
    else:
        actor_type = ActorType.USER if actor_id else ActorType.SYSTEM
        actor = actor_id
    return AuditContext(
        actor_type=actor_type,
        actor_id=actor,
        ip=_inet(request.get(keys.CLIENT_IP) or request.remote),
        user_agent=(request.headers.get("User-Agent") or "")[:512] or None,
        request_id=request.get(keys.REQUEST_ID),
    )


def _inet(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


_SECRET_KEY = re.compile(r"password|secret|token|api_?key|credential|authorization|cookie",
                         re.IGNORECASE)


def scrub(details: Any) -> Any:
    if isinstance(details, dict):
        return {k: "[redacted]" if _SECRET_KEY.search(str(k)) else scrub(v)
                for k, v in details.items()}
    if isinstance(details, list):
        return [scrub(v) for v in details]
    return details


INSERT_ENTRY = """
    insert into audit_log (id, org_id, actor_type, actor_id, action, resource_type, resource_id,
                           ip, user_agent, request_id, details)
    values ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9, $10, $11)
"""
# No RETURNING: it would need the entry to be readable too, and an entry without an org
# is written by anyone but read only by the platform.


async def record(
    tx: Tx,
    who: web.Request | AuditContext,
    action: AuditAction,
    *,
    resource_type: str | None = None,
    resource_id: UUID | str | int | None = None,
    details: dict[str, Any] | None = None,
    org_id: UUID | None = None,
    actor_id: UUID | None = None,
) -> UUID:
    """Writes one audit entry in `tx`. The org defaults to the transaction's own."""
    context = who if isinstance(who, AuditContext) else context_of(who, actor_id)
    entry_id = uuid.uuid4()
    await tx.execute(
        INSERT_ENTRY,
        entry_id,
        org_id if org_id is not None else tx.org_id,
        context.actor_type.value,
        context.actor_id,
        action.value,
        resource_type,
        None if resource_id is None else str(resource_id),
        context.ip,
        context.user_agent,
        context.request_id,
        scrub(details or {}),
    )
    return entry_id


async def record_each(
    tx: Tx,
    who: web.Request | AuditContext,
    action: AuditAction,
    resource_type: str,
    entries: Sequence[tuple[UUID, UUID | str, dict[str, Any]]],
) -> None:
    """One entry per `(org_id, resource_id, details)`, the same action and actor for all,
    written in `tx` in one pipelined batch: for a change that ends many things at once."""
    if not entries:
        return
    context = who if isinstance(who, AuditContext) else context_of(who)
    await tx.executemany(INSERT_ENTRY, [
        (uuid.uuid4(), org_id, context.actor_type.value, context.actor_id, action.value,
         resource_type, str(resource_id), context.ip, context.user_agent, context.request_id,
         scrub(details))
        for org_id, resource_id, details in entries])
