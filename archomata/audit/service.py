"""The audit flows, without HTTP: recording an entry, reading the log, exporting it.

`record(tx, who, action, ...)` writes one entry inside the caller's transaction, so an
entry exists exactly when its change committed. `who` is an AuditContext (actor, IP, user
agent, request id). `details` must never hold a secret: keys that name one are replaced
by "[redacted]" as a last line of defence.

Each entry is appended to its org's hash chain (sql/004, keyed by sql/018): record()
locks the chain's head (audit_chain_next: its seq, hash and the clock), computes the
entry's HMAC under ARCHOMATA_AUDIT_KEY here, in the service, since the database must
never hold the key (archomata/audit/keyed.py), and inserts the entry; a trigger checks
it is the head's next link, moves the head and writes its search terms. The head stays
locked until the transaction ends, so record() late in a transaction keeps that wait
short. `archomata audit verify` checks the chains (archomata/audit/chain.py).

An export is audited, and that entry committed, before the first entry leaves, so an
interrupted export still shows (`begin_export`); its entries then come a keyset page at
a time, each page in a transaction of its own (`export_pages`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from archomata.audit.actions import AuditAction
from archomata.audit.context import AuditContext
from archomata.audit.export_formats import ExportFormat, Row
from archomata.audit.keyed import canonical_ip, current_key, entry_fields, entry_mac
from archomata.audit.schemas import AuditLogQuerySchema
from archomata.audit.store import (
    CANDIDATE_CAP,
    AuditEntry,
    AuditFilter,
    SearchTooBroad,
    export_page,
    list_page,
    search_terms,
)
from archomata.db import Tx
from archomata.errors import GatewayTimeout, ServiceUnavailable, ValidationFailed
from archomata.web.pagination import Page
from archomata.web.params import after

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
                           ip, user_agent, request_id, details, seq, prev_hash, occurred_at, hash)
    values ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9, $10, $11::text::jsonb, $12, $13, $14, $15)
"""
# No RETURNING: it would need the entry to be readable too, and an entry without an org
# is written by anyone but read only by the platform. `details` goes as the JSON text the
# MAC was computed from.

# Locks the chains' heads until the transaction ends (sql/018): what the next entries
# link to.
CHAIN_NEXT = """
    select chain_id, seq, hash, at, legacy::text as legacy from audit_chain_next($1::uuid[])
"""
NO_ORG = uuid.UUID(int=0)


def _json_text(details: dict[str, Any] | None) -> str:
    # As the connections' jsonb codec encodes (archomata.db): anything else as its str.
    return orjson.dumps(scrub(details or {}), default=str).decode()


def _sealed(key: bytes, head: dict[str, Any], org_id: UUID | None, who: AuditContext,
            action: AuditAction, resource_type: str | None, resource_id: str | None,
            details: str) -> tuple[Any, ...]:
    """The INSERT's arguments for the entry after `head` (its seq, hash and clock), which
    this advances; the entry's MAC computed here, in the service (keyed.py)."""
    values = {"org_id": org_id, "seq": head["seq"] + 1, "prev_hash": head["hash"],
              "id": uuid.uuid4(), "occurred_at": head["at"],
              "actor_type": who.actor_type.value, "actor_id": who.actor_id,
              "action": action.value, "resource_type": resource_type,
              "resource_id": resource_id, "ip": canonical_ip(who.ip),
              "user_agent": who.user_agent, "request_id": who.request_id, "details": details}
    mac = entry_mac(key, entry_fields(values))
    head["seq"], head["hash"] = values["seq"], mac
    return (values["id"], org_id, values["actor_type"], who.actor_id, values["action"],
            resource_type, resource_id, values["ip"], who.user_agent, who.request_id,
            details, values["seq"], values["prev_hash"], values["occurred_at"], mac)


async def _heads(tx: Tx, key: bytes,
                 org_ids: Sequence[UUID | None]) -> dict[UUID, dict[str, Any]]:
    """The chains' heads, locked until the transaction ends. When the chain without an
    org has had no keyed entry yet, its next is the manifest sealing where each chain's
    unkeyed segment ends (sql/018), written here first, whoever the writer is."""
    heads = {}
    for r in await tx.fetch(CHAIN_NEXT, list(org_ids)):
        head = heads[r["chain_id"]] = {"seq": r["seq"], "hash": bytes(r["hash"]), "at": r["at"]}
        if r["legacy"] is not None:
            await tx.execute(INSERT_ENTRY, *_sealed(
                key, head, None, AuditContext.system(), AuditAction.AUDIT_CHAIN_KEYED,
                "audit_log", None, _json_text({"legacy": orjson.loads(r["legacy"])})))
    return heads


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
    """Writes one audit entry in `tx`. The org defaults to the transaction's own. Two
    statements: the chain's head locked and read, then the keyed entry (sql/018)."""
    key = current_key()
    org = org_id if org_id is not None else tx.org_id
    heads = await _heads(tx, key, [org])
    args = _sealed(key, heads[org or NO_ORG], org, who, action, resource_type,
                   None if resource_id is None else str(resource_id), _json_text(details))
    await tx.execute(INSERT_ENTRY, *args)
    entry_id: UUID = args[0]
    return entry_id


async def record_each(
    tx: Tx,
    who: AuditContext,
    action: AuditAction,
    resource_type: str,
    entries: Sequence[tuple[UUID, UUID | str, dict[str, Any]]],
) -> None:
    """One entry per `(org_id, resource_id, details)`, the same action and actor for all,
    written in `tx` in one pipelined batch: for a change that ends many things at once.
    Every chain named is locked at once, then each entry links to the one before it."""
    if not entries:
        return
    key = current_key()
    heads = await _heads(tx, key, sorted({org_id for org_id, _, _ in entries}))
    await tx.executemany(INSERT_ENTRY, [
        _sealed(key, heads[org_id], org_id, who, action, resource_type, str(resource_id),
                _json_text(details))
        for org_id, resource_id, details in entries])


# A search's bounds (GET /audit-logs `q`): each statement of it gets SEARCH_TIMEOUT, so
# the two answer well within the contract's 10 s; words that must occur together need a
# window of at most SEARCH_WINDOW (store.CANDIDATE_CAP bounds the walk within it).
SEARCH_TIMEOUT_MS = 3000
SEARCH_WINDOW = timedelta(days=31)


def _window(terms: tuple[str, ...], query: dict[str, Any]) -> None:
    """Several words need `from` and `to`, at most SEARCH_WINDOW apart: 422 naming the
    parameter otherwise."""
    if len(terms) < 2:
        return
    for name, key in (("from", "since"), ("to", "until")):
        if key not in query:
            raise ValidationFailed(
                f"A search of several words needs `from` and `to` (at most "
                f"{SEARCH_WINDOW.days} days apart).",
                errors={name: [f"Required when `q` has several words (at most "
                               f"{SEARCH_WINDOW.days} days between from and to)."]})
    if query["until"] - query["since"] > SEARCH_WINDOW:
        raise ValidationFailed(
            f"A search of several words covers at most {SEARCH_WINDOW.days} days.",
            errors={"to": [f"At most {SEARCH_WINDOW.days} days after `from` when `q` has "
                           "several words."]})


async def search_filter(tx: Tx, query: dict[str, Any], org_id: UUID | None
                        ) -> AuditFilter | None:
    """The filter the query asks for; None when it cannot match (a word no entry has)."""
    terms: tuple[str, ...] = ()
    if "q" in query:
        # For the rest of this transaction: a search never runs past its bound.
        await tx.execute(f"set local statement_timeout = {SEARCH_TIMEOUT_MS}")
        terms, all_seen = await search_terms(tx, query["q"], org_id)
        if not terms:
            raise ValidationFailed("The search has no words.",
                                   errors={"q": ["Give at least one word of 2 characters."]})
        _window(terms, query)
        if not all_seen:
            return None
    return AuditFilter(org_id=org_id, actor_id=query.get("actor_id"),
                       action=query.get("action"), resource_type=query.get("resource_type"),
                       resource_id=query.get("resource_id"), since=query.get("since"),
                       until=query.get("until"), terms=terms)


def _search_timeout() -> GatewayTimeout:
    return GatewayTimeout("The search took too long; narrow it (a shorter from/to, a rarer "
                          "word, a filter).", code="search_timeout")


async def list_entries(tx: Tx, query: dict[str, Any], org_id: UUID | None,
                       page: Page) -> list[AuditEntry]:
    """One page of the entries the query asks for (`org_id` None: every org's), newest
    first, with one more than the page holds to tell whether another follows."""
    try:
        where = await search_filter(tx, query, org_id)
        if where is None:
            return []
        return await list_page(tx, where, after(page), page.limit + 1)
    except asyncpg.QueryCanceledError:  # statement_timeout: the transaction is over
        raise _search_timeout() from None
    except SearchTooBroad:
        raise ServiceUnavailable(
            f"The search examined {CANDIDATE_CAP} entries without filling a page; narrow "
            "it (a shorter from/to, a rarer word, a filter).", code="search_too_broad"
        ) from None


async def begin_export(tx: Tx, who: AuditContext, query: dict[str, Any],
                       export_format: ExportFormat) -> AuditFilter | None:
    """The export's filter, its audit entry written in `tx` (commit it before the first
    entry leaves). A bad `q` refuses the export unaudited."""
    try:
        where = await search_filter(tx, query, tx.org_id)
    except asyncpg.QueryCanceledError:  # statement_timeout: the transaction is over
        raise _search_timeout() from None
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
        try:
            async with open_tx() as tx:
                if where.terms:  # each page of a search is bounded as a search is
                    await tx.execute(f"set local statement_timeout = {SEARCH_TIMEOUT_MS}")
                page, after = await export_page(tx, where, after, EXPORT_CHUNK, json_lines)
        except asyncpg.QueryCanceledError:
            if after is None:  # nothing sent yet: the client gets a problem+json
                raise _search_timeout() from None
            raise ExportCut from None  # mid-stream: a broken transfer, never a short file
        if page:
            yield page
        if len(page) < EXPORT_CHUNK:
            return
        if must_stop():
            raise ExportCut
