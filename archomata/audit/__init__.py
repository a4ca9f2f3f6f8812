"""Audit: every change's entry, the hash chains over them, and the log's export.

    actions.py         AuditAction: what an entry says happened
    context.py         AuditContext: who acted and from where
    service.py         the flows: record an entry, list the log, export it (no HTTP)
    store.py           the log's SQL, read: listings and the export's pages
    schemas.py         the routes' query strings and answers
    routes.py          /audit-logs: the org's log, its export, the platform's view
    chain.py           the hash chains walked: `archomata audit verify` / `audit anchor`
    chain_walk.py      one chain's entries checked in order, to the first broken link
    keyed.py           ARCHOMATA_AUDIT_KEY and the MACs made with it
    witness.py         signed heads kept outside the database
    search_gate.py     who may run a search (`q`) now
    export_formats.py  entries as CSV or JSON Lines
    export_slots.py    how many exports run at once

Most of the code base writes `from archomata import audit` and `audit.record(tx, request,
...)`: `record` and `record_each` here are the thin request-taking helpers for handlers,
which build the AuditContext from the request and call the service's; a flow without
HTTP calls archomata.audit.service with an AuditContext.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata.audit import service
from archomata.audit.actions import AuditAction
from archomata.audit.context import AuditContext, context_of
from archomata.db import Tx

__all__ = ["AuditAction", "AuditContext", "context_of", "record", "record_each"]


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
    """service.record for a handler: `actor_id` names the actor of a request no token
    names yet (login); ignored for an AuditContext, which names its own."""
    context = who if isinstance(who, AuditContext) else context_of(who, actor_id)
    return await service.record(tx, context, action, resource_type=resource_type,
                                resource_id=resource_id, details=details, org_id=org_id)


async def record_each(
    tx: Tx,
    who: web.Request | AuditContext,
    action: AuditAction,
    resource_type: str,
    entries: Sequence[tuple[UUID, UUID | str, dict[str, Any]]],
) -> None:
    """service.record_each for a handler."""
    context = who if isinstance(who, AuditContext) else context_of(who)
    await service.record_each(tx, context, action, resource_type, entries)
