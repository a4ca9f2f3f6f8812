"""/audit-logs: the org's audit log, its export, and the platform's view across orgs.

Lists are newest first with keyset cursors on (occurred_at, id): an entry that arrives
while a client pages sorts before its cursor, so pages never shift or repeat. An export
is audited, and that entry committed, before the first entry leaves, so an interrupted
export still shows; it then streams a keyset page at a time, in constant memory, with no
database connection held while it writes (service.export_pages), and only as many at once as
archomata.audit.export_slots allows. The flows are archomata.audit.service's; here they
meet HTTP: the query, the streamed answer, a connection cut when an export stops short.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime

from aiohttp import web

from archomata import keys
from archomata.access import caller
from archomata.access.guards import require_permission, require_platform_admin
from archomata.access.permissions import Permission
from archomata.access.route_policy import TimeoutClass
from archomata.audit import service
from archomata.audit.context import context_of
from archomata.audit.export_formats import Encoder, ExportFormat, Row, encoder_for
from archomata.audit.export_slots import Lease
from archomata.audit.schemas import (
    AdminAuditLogPageSchema,
    AdminAuditLogQuerySchema,
    AuditEntryListSchema,
    AuditLogPageSchema,
    AuditLogQuerySchema,
    ExportQuerySchema,
)
from archomata.audit.store import AuditEntry, AuditFilter
from archomata.db import org_tx, platform_tx
from archomata.web.connection import cut
from archomata.web.json_io import json_response, load_valid
from archomata.web.openapi import doc
from archomata.web.pagination import Page, listing, page_of
from archomata.web.params import client_gone

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def _listing(found: list[AuditEntry], page: Page) -> web.Response:
    body = listing([asdict(e) for e in found], len(found), page, key="occurred_at")
    return json_response(AuditEntryListSchema().dump(body))


SEARCH_PROBLEMS = {
    422: "`validation_failed`: among others, a `q` of several words without `from` and "
         "`to`, or with them more than 31 days apart (the parameter is named)",
    429: "`too_many_searches`: this person ran 20 searches (`q`) in the last minute "
         "(Retry-After)",
    503: "`search_too_broad`: the search examined 20,000 entries without filling a page "
         "(narrow it); `searches_busy`: this server runs as many searches as it may "
         "(Retry-After)",
    504: "`search_timeout`: the search ran past its bound (3 s a statement)",
}
SEARCH_DOC = (" A `q` search answers within 10 s or is refused: several words need `from` "
              "and `to` at most 31 days apart, each person may run 20 a minute, and a "
              "search stops after 20,000 candidate entries.")


@contextlib.asynccontextmanager
async def _search_turn(request: web.Request, query: dict[str, object]) -> AsyncIterator[None]:
    """A search (`q`) waits for its turn (search_gate); a plain listing does not."""
    if "q" not in query:
        yield
        return
    async with request.app[keys.AUDIT_SEARCHES].hold(caller.person(request).user_id):
        yield


@routes.get("/api/v1/audit-logs")
@require_permission(Permission.AUDIT_LOGS_READ)
@doc("The org's audit log, newest first." + SEARCH_DOC, query=AuditLogPageSchema,
     response=AuditEntryListSchema, problems=SEARCH_PROBLEMS)
async def list_audit_logs(request: web.Request) -> web.Response:
    page, query = page_of(request, AuditLogQuerySchema)
    async with _search_turn(request, query), org_tx(request) as tx:
        found = await service.list_entries(tx, query, tx.org_id, page)
    return _listing(found, page)


@routes.get("/api/v1/admin/audit-logs")
@require_platform_admin
@doc("Every org's audit log, and entries without an org, newest first." + SEARCH_DOC,
     query=AdminAuditLogPageSchema, response=AuditEntryListSchema, problems=SEARCH_PROBLEMS)
async def list_all_audit_logs(request: web.Request) -> web.Response:
    page, query = page_of(request, AdminAuditLogQuerySchema)
    async with _search_turn(request, query), platform_tx(request) as tx:
        found = await service.list_entries(tx, query, query.get("org_id"), page)
    return _listing(found, page)


@routes.get("/api/v1/audit-logs/export")
@require_permission(Permission.AUDIT_LOGS_READ, timeout=TimeoutClass.UNTIMED)
@doc("The org's audit log as CSV or JSON Lines (streamed), newest first, with the "
     "filters of the list. At most 2 exports of an org run at once; a client that reads "
     "nothing for ARCHOMATA_STREAM_STALL_SECONDS (30) is cut off.", query=ExportQuerySchema,
     problems={429: "`too_many_exports`: 2 exports of this org are running; "
                    "`too_many_searches`: with `q`, the person's searches (Retry-After)",
               503: "`exports_busy`: this server runs as many exports as it may "
                    "(Retry-After); with `q`, the search's answers too",
               504: "`search_timeout`: the search's first page ran past its bound (a later "
                    "one cuts the transfer)"})
async def export_audit_logs(request: web.Request) -> web.StreamResponse:
    query = load_valid(ExportQuerySchema, dict(request.query), query=True)
    export_format = ExportFormat(query.pop("format"))
    org_id = caller.member(request).org_id
    async with request.app[keys.EXPORTS].hold(org_id) as lease:
        # A search's export counts against the person's searches and takes a search slot
        # while its words are looked up; each page is then bounded (service.export_pages).
        async with _search_turn(request, query), org_tx(request) as tx:
            # Its entry commits before the first entry leaves: an interrupted export shows.
            where = await service.begin_export(tx, context_of(request), query,
                                               export_format)
        return await _stream(request, lease, where, export_format)


async def _stream(request: web.Request, lease: Lease, where: AuditFilter | None,
                  export_format: ExportFormat) -> web.StreamResponse:
    encoder = encoder_for(export_format)
    pages = service.export_pages(lambda: org_tx(request), where,
                                 json_lines=export_format is ExportFormat.JSONL,
                                 must_stop=lambda: lease.lost or client_gone(request))
    async with contextlib.aclosing(pages):
        return await _respond(request, encoder, pages, export_format)


async def _respond(request: web.Request, encoder: Encoder, pages: AsyncIterator[list[Row]],
                   export_format: ExportFormat) -> web.StreamResponse:
    # Before the headers: a failure here is still a problem+json.
    first: list[Row] = await anext(pages, [])
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(headers={
        "Content-Type": f"{encoder.content_type}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="audit-log-{stamp}.{export_format}"',
        "Cache-Control": "no-store"})
    await response.prepare(request)
    try:
        # A client that stops reading blocks these writes; the connection handler cuts it
        # after ARCHOMATA_STREAM_STALL_SECONDS without progress (archomata.http.server).
        await response.write(encoder.header() + encoder.encode(first))
        async for page in pages:
            await response.write(encoder.encode(page))
        await response.write_eof()
    except ConnectionError:  # reset, or lost while a write waited for the client
        log.info("audit export abandoned by the client")
    except service.ExportCut:
        log.info("audit export stopped: its client is gone or its slot was lost")
        _abort(request)
    except BaseException:
        _abort(request)
        raise
    return response


def _abort(request: web.Request) -> None:
    # The status line is gone: cut the connection so that the client sees a broken
    # transfer (no final chunk), never a complete-looking file with entries missing.
    if request.transport is not None:
        cut(request.transport)
