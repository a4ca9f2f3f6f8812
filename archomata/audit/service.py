"""The audit flows, without HTTP: recording an entry, reading the log, exporting it.

`record(tx, who, action, ...)` writes one entry inside the caller's transaction, so an
entry exists exactly when its change committed. `who` is an AuditContext (actor, IP, user
agent, request id). `details` must never hold a secret: keys that name one are replaced
by "[redacted]" as a last line of defence.

The database appends each entry to its org's hash chain as it is inserted (a trigger,
sql/004_audit_chain.sql): it takes the chain's next seq, links the previous entry's hash
and stamps `occurred_at`, holding the org's chain head until the transaction ends, so
record() late in a transaction keeps that wait short. `archomata audit verify` checks
the chains (archomata/audit/chain.py).

An export is audited, and that entry committed, before the first entry leaves, so an
interrupted export still shows (`begin_export`); its entries then come a keyset page at
a time, each page in a transaction of its own (`export_pages`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

from archomata.audit.actions import AuditAction
from archomata.audit.context import AuditContext
from archomata.audit.export_formats import ExportFormat, Row
from archomata.audit.schemas import AuditLogQuerySchema
from archomata.audit.store import AuditEntry, AuditFilter, export_page, list_page, search_terms
from archomata.db import Tx
from archomata.errors import ValidationFailed
from archomata.web.pagination import Page

EXPORT_CHUNK = 1000  # rows per fetch: the export's memory is about one chunk

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
    who: AuditContext,
    action: AuditAction,
    *,
    resource_type: str | None = None,
    resource_id: UUID | str | int | None = None,
    details: dict[str, Any] | None = None,
    org_id: UUID | None = None,
) -> UUID:
    """Writes one audit entry in `tx`. The org defaults to the transaction's own."""
    entry_id = uuid.uuid4()
    await tx.execute(
        INSERT_ENTRY,
        entry_id,
        org_id if org_id is not None else tx.org_id,
        who.actor_type.value,
        who.actor_id,
        action.value,
        resource_type,
        None if resource_id is None else str(resource_id),
        who.ip,
        who.user_agent,
        who.request_id,
        scrub(details or {}),
    )
    return entry_id


async def record_each(
    tx: Tx,
    who: AuditContext,
    action: AuditAction,
    resource_type: str,
    entries: Sequence[tuple[UUID, UUID | str, dict[str, Any]]],
) -> None:
    """One entry per `(org_id, resource_id, details)`, the same action and actor for all,
    written in `tx` in one pipelined batch: for a change that ends many things at once."""
    if not entries:
        return
    await tx.executemany(INSERT_ENTRY, [
        (uuid.uuid4(), org_id, who.actor_type.value, who.actor_id, action.value,
         resource_type, str(resource_id), who.ip, who.user_agent, who.request_id,
         scrub(details))
        for org_id, resource_id, details in entries])


async def search_filter(tx: Tx, query: dict[str, Any], org_id: UUID | None
                        ) -> AuditFilter | None:
    """The filter the query asks for; None when it cannot match (a word no entry has)."""
    terms: tuple[str, ...] = ()
    if "q" in query:
        terms, all_seen = await search_terms(tx, query["q"], org_id)
        if not terms:
            raise ValidationFailed("The search has no words.",
                                   errors={"q": ["Give at least one word of 2 characters."]})
        if not all_seen:
            return None
    return AuditFilter(org_id=org_id, actor_id=query.get("actor_id"),
                       action=query.get("action"), resource_type=query.get("resource_type"),
                       resource_id=query.get("resource_id"), since=query.get("since"),
                       until=query.get("until"), terms=terms)


async def list_entries(tx: Tx, query: dict[str, Any], org_id: UUID | None,
                       page: Page) -> list[AuditEntry]:
    """One page of the entries the query asks for (`org_id` None: every org's), newest
    first, with one more than the page holds to tell whether another follows."""
    where = await search_filter(tx, query, org_id)
    if where is None:
        return []
    after = (page.after.at, page.after.id) if page.after else None
    return await list_page(tx, where, after, page.limit + 1)


async def begin_export(tx: Tx, who: AuditContext, query: dict[str, Any],
                       export_format: ExportFormat) -> AuditFilter | None:
    """The export's filter, its audit entry written in `tx` (commit it before the first
    entry leaves). A bad `q` refuses the export unaudited."""
    where = await search_filter(tx, query, tx.org_id)
    await record(tx, who, AuditAction.AUDIT_EXPORTED, resource_type="audit_log",
                 details={"format": export_format.value,
                          "filters": AuditLogQuerySchema().dump(query)})
    return where


class ExportCut(Exception):
    """The export must stop before its end: the client sees a broken transfer."""


async def export_pages(open_tx: Callable[[], AbstractAsyncContextManager[Tx]],
                       where: AuditFilter | None, json_lines: bool,
                       must_stop: Callable[[], bool]) -> AsyncGenerator[list[Row], None]:
    """The export's entries a page at a time, each page read in a transaction of its own
    (`open_tx`): between pages, while the client takes its time, the export holds no
    connection. Raises ExportCut between pages once `must_stop()` (slot lost, client gone).

    Keyset pages on the list's order, (occurred_at, id) descending. Within an org an
    entry's occurred_at is stamped under its chain's lock (sql/004), so time order is
    commit order: an entry committed after the first page sorts before it and is never
    reached. The export therefore holds every entry committed before its first page (its
    own audit.exported entry included) exactly once, and none committed later, as the
    single snapshot of a long transaction did."""
    after = None
    while where is not None:
        async with open_tx() as tx:
            page, after = await export_page(tx, where, after, EXPORT_CHUNK, json_lines)
        if page:
            yield page
        if len(page) < EXPORT_CHUNK:
            return
        if must_stop():
            raise ExportCut
