"""/audit-logs: the org's audit log, its export, and the platform's view across orgs.

Lists are newest first with keyset cursors on (occurred_at, id): an entry that arrives
while a client pages sorts before its cursor, so pages never shift or repeat. An export
is audited, and that entry committed, before the first entry leaves, so an interrupted
export still shows; it then streams a keyset page at a time, in constant memory, with no
database connection held while it writes (see _pages), and only as many at once as
archomata.exports allows.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from archomata import audit, keys
from archomata.audit import AuditAction
from archomata.audit_export import Encoder, ExportFormat, Row, encoder_for
from archomata.db import Tx, org_tx, platform_tx
from archomata.errors import ValidationFailed
from archomata.exports import Lease
from archomata.guards import require_permission, require_platform_admin
from archomata.handlers.params import caller, client_gone
from archomata.openapi import doc
from archomata.pagination import Page, PageQuerySchema, listing, page_of
from archomata.permissions import Permission
from archomata.server import cut
from archomata.store import audit_logs
from archomata.store.audit_logs import AuditEntry, AuditFilter
from archomata.web.route_policy import TimeoutClass
from archomata.web_json import json_response
from archomata.web_json import validate as validate_query

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
EXPORT_CHUNK = 1000  # rows per fetch: the export's memory is about one chunk
# A `+` in a query string arrives as a space: "2025-01-01T00:00:00 02:00" meant +02:00.
_OFFSET_AS_SPACE = re.compile(r" (\d\d(:?\d\d)?)$")


class AuditLogQuerySchema(Schema):
    actor_id = fields.UUID()
    action = fields.String(validate=validate.Length(1, 100))
    resource_type = fields.String(validate=validate.Length(1, 100))
    resource_id = fields.String(validate=validate.Length(1, 200))
    since = fields.AwareDateTime(data_key="from", default_timezone=UTC,
                                 metadata={"description": "RFC 3339; entries at or after it"})
    until = fields.AwareDateTime(data_key="to", default_timezone=UTC,
                                 metadata={"description": "RFC 3339; entries before it"})
    q = fields.String(validate=validate.Length(1, 200), metadata={"description": (
        "Words, all of which must appear in the action, the resource type or id, or a "
        "value in details; whole words, case-insensitive. Words are split at white space "
        "and punctuation other than `_`, `-` and `:` (an email gives its parts).")})

    @pre_load
    def _plus_in_offsets(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {k: _OFFSET_AS_SPACE.sub(r"+\1", v) if k in ("from", "to") and
                isinstance(v, str) else v for k, v in data.items()}

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise ValidationError("Must be later than `from`.", "to")


class AdminAuditLogQuerySchema(AuditLogQuerySchema):
    org_id = fields.UUID()


class AuditLogPageSchema(PageQuerySchema, AuditLogQuerySchema):
    """The list's query as documented: page_of takes limit and cursor itself."""


class AdminAuditLogPageSchema(PageQuerySchema, AdminAuditLogQuerySchema):
    """The platform list's query as documented."""


class ExportQuerySchema(AuditLogQuerySchema):
    format = fields.String(required=True, validate=validate.OneOf([f.value for f in ExportFormat]))


class AuditEntrySchema(Schema):
    id = fields.UUID(required=True)
    occurred_at = fields.DateTime(required=True)
    org_id = fields.UUID(allow_none=True, required=True)
    actor_type = fields.String(required=True)
    actor_id = fields.UUID(allow_none=True, required=True)
    action = fields.String(required=True)
    resource_type = fields.String(allow_none=True, required=True)
    resource_id = fields.String(allow_none=True, required=True)
    ip = fields.String(allow_none=True, required=True)
    user_agent = fields.String(allow_none=True, required=True)
    request_id = fields.String(allow_none=True, required=True)
    details = fields.Dict(required=True)
    seq = fields.Integer(required=True, metadata={
        "description": "Position in the org's hash chain: orders the org's entries"})


class AuditEntryListSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


async def _filter(tx: Tx, query: dict[str, Any], org_id: UUID | None) -> AuditFilter | None:
    """The filter the query asks for; None when it cannot match (a word no entry has)."""
    terms: tuple[str, ...] = ()
    if "q" in query:
        terms, all_seen = await audit_logs.search_terms(tx, query["q"], org_id)
        if not terms:
            raise ValidationFailed("The search has no words.",
                                   errors={"q": ["Give at least one word of 2 characters."]})
        if not all_seen:
            return None
    return AuditFilter(org_id=org_id, actor_id=query.get("actor_id"),
                       action=query.get("action"), resource_type=query.get("resource_type"),
                       resource_id=query.get("resource_id"), since=query.get("since"),
                       until=query.get("until"), terms=terms)


async def _page(tx: Tx, query: dict[str, Any], org_id: UUID | None,
                page: Page) -> list[AuditEntry]:
    where = await _filter(tx, query, org_id)
    if where is None:
        return []
    after = (page.after.at, page.after.id) if page.after else None
    return await audit_logs.list_page(tx, where, after, page.limit + 1)


def _listing(found: list[AuditEntry], page: Page) -> web.Response:
    body = listing([asdict(e) for e in found], len(found), page, key="occurred_at")
    return json_response(AuditEntryListSchema().dump(body))


@routes.get("/api/v1/audit-logs")
@require_permission(Permission.AUDIT_LOGS_READ)
@doc("The org's audit log, newest first", query=AuditLogPageSchema,
     response=AuditEntryListSchema)
async def list_audit_logs(request: web.Request) -> web.Response:
    page, query = page_of(request, AuditLogQuerySchema)
    async with org_tx(request) as tx:
        found = await _page(tx, query, tx.org_id, page)
    return _listing(found, page)


@routes.get("/api/v1/admin/audit-logs")
@require_platform_admin
@doc("Every org's audit log, and entries without an org, newest first",
     query=AdminAuditLogPageSchema, response=AuditEntryListSchema)
async def list_all_audit_logs(request: web.Request) -> web.Response:
    page, query = page_of(request, AdminAuditLogQuerySchema)
    async with platform_tx(request) as tx:
        found = await _page(tx, query, query.get("org_id"), page)
    return _listing(found, page)


@routes.get("/api/v1/audit-logs/export")
@require_permission(Permission.AUDIT_LOGS_READ, timeout=TimeoutClass.UNTIMED)
@doc("The org's audit log as CSV or JSON Lines (streamed), newest first, with the "
     "filters of the list. At most 2 exports of an org run at once; a client that reads "
     "nothing for ARCHOMATA_STREAM_STALL_SECONDS (30) is cut off.", query=ExportQuerySchema,
     problems={429: "`too_many_exports`: 2 exports of this org are running (Retry-After)",
               503: "`exports_busy`: this server runs as many exports as it may "
                    "(Retry-After)"})
async def export_audit_logs(request: web.Request) -> web.StreamResponse:
    query = validate_query(ExportQuerySchema(), dict(request.query))
    export_format = ExportFormat(query.pop("format"))
    org_id, _ = caller(request)
    async with request.app[keys.EXPORTS].hold(org_id) as lease:
        async with org_tx(request) as tx:
            where = await _filter(tx, query, tx.org_id)  # first: a bad `q` is a 422, unaudited
            await audit.record(tx, request, AuditAction.AUDIT_EXPORTED,
                               resource_type="audit_log",
                               details={"format": export_format.value,
                                        "filters": AuditLogQuerySchema().dump(query)})
        return await _stream(request, lease, where, export_format)


class _Cut(Exception):
    """The export must stop before its end: the client sees a broken transfer."""


async def _pages(request: web.Request, lease: Lease, where: AuditFilter | None,
                 json_lines: bool) -> AsyncIterator[list[Row]]:
    """The export's entries a page at a time, each page read in a transaction of its own:
    between pages, while the client takes its time, the export holds no connection.

    Keyset pages on the list's order, (occurred_at, id) descending. Within an org an
    entry's occurred_at is stamped under its chain's lock (sql/004), so time order is
    commit order: an entry committed after the first page sorts before it and is never
    reached. The export therefore holds every entry committed before its first page (its
    own audit.exported entry included) exactly once, and none committed later, as the
    single snapshot of a long transaction did."""
    after = None
    while where is not None:
        async with org_tx(request) as tx:
            page, after = await audit_logs.export_page(tx, where, after, EXPORT_CHUNK,
                                                       json_lines)
        if page:
            yield page
        if len(page) < EXPORT_CHUNK:
            return
        if lease.lost or client_gone(request):
            raise _Cut


async def _stream(request: web.Request, lease: Lease, where: AuditFilter | None,
                  export_format: ExportFormat) -> web.StreamResponse:
    encoder = encoder_for(export_format)
    async with contextlib.aclosing(_pages(request, lease, where, json_lines=export_format
                                          is ExportFormat.JSONL)) as pages:
        return await _respond(request, encoder, pages, export_format)


async def _respond(request: web.Request, encoder: Encoder, pages: AsyncIterator[list[Row]],
                   export_format: ExportFormat) -> web.StreamResponse:
    first = await anext(pages, [])  # before the headers: a failure here is still a problem+json
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(headers={
        "Content-Type": f"{encoder.content_type}; charset=utf-8",
        "Content-Disposition": f'attachment; filename="audit-log-{stamp}.{export_format}"',
        "Cache-Control": "no-store"})
    await response.prepare(request)
    try:
        # A client that stops reading blocks these writes; the connection handler cuts it
        # after ARCHOMATA_STREAM_STALL_SECONDS without progress (archomata.server).
        await response.write(encoder.header() + encoder.encode(first))
        async for page in pages:
            await response.write(encoder.encode(page))
        await response.write_eof()
    except ConnectionError:  # reset, or lost while a write waited for the client
        log.info("audit export abandoned by the client")
    except _Cut:
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
