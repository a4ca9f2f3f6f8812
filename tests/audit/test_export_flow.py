"""The export flow of archomata.audit.service without HTTP, on the real PostgreSQL: the
export's own entry, then every entry a keyset page at a time, each page in a transaction
of its own, stopped between pages when asked."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from archomata.access.principal import ActorType
from archomata.audit import service
from archomata.audit.actions import AuditAction
from archomata.audit.context import AuditContext
from archomata.audit.export_formats import ExportFormat
from archomata.audit.store import AuditFilter
from archomata.db import service_tx
from archomata.errors import ValidationFailed
from archomata.identity.onboarding import create_user_with_org
from tests.factories import unique_email

WHO = AuditContext(ActorType.USER, UUID(int=7), ip="192.0.2.9", user_agent="flow-test",
                   request_id="req-flow")


async def _org(pool: asyncpg.Pool) -> UUID:
    account = await create_user_with_org(
        pool, AuditContext.system(), email=unique_email("flow"), name="Flow",
        password_hash=None, org_name="Flow Org", verified=True)
    org_id: UUID = account.org.id
    return org_id


async def _ids(pool: asyncpg.Pool, org_id: UUID, where: AuditFilter | None,
               must_stop: Any = lambda: False) -> list[list[str]]:
    pages = service.export_pages(lambda: service_tx(pool, org_id=org_id), where,
                                 json_lines=False, must_stop=must_stop)
    return [[row[0] for row in page] async for page in pages]


async def test_begin_export_writes_its_entry_with_the_filters(
        pool: asyncpg.Pool, owner_conn: asyncpg.Connection) -> None:
    org_id = await _org(pool)
    async with service_tx(pool, org_id=org_id) as tx:
        where = await service.begin_export(tx, WHO, {"action": "org.updated"},
                                           ExportFormat.JSONL)
    assert where is not None and where.org_id == org_id and where.action == "org.updated"
    entry = await owner_conn.fetchrow(
        "select actor_id, ip::text, user_agent, request_id, details from audit_log "
        "where org_id = $1 and action = $2", org_id, AuditAction.AUDIT_EXPORTED.value)
    assert entry is not None
    assert (entry["actor_id"], entry["ip"], entry["user_agent"], entry["request_id"]) == (
        WHO.actor_id, "192.0.2.9/32", "flow-test", "req-flow")
    assert json.loads(entry["details"]) == {"format": "jsonl", "filters": {"action": "org.updated"}}


async def test_a_search_without_words_refuses_the_export_before_its_entry(
        pool: asyncpg.Pool, owner_conn: asyncpg.Connection) -> None:
    org_id = await _org(pool)
    async with service_tx(pool, org_id=org_id) as tx:
        with pytest.raises(ValidationFailed) as caught:
            await service.begin_export(tx, WHO, {"q": "!!"}, ExportFormat.CSV)
        # Still inside the transaction: nothing was written, not merely rolled back.
        assert await tx.fetchval("select count(*) from audit_log where action = $1",
                                 AuditAction.AUDIT_EXPORTED.value) == 0
    assert caught.value.errors == {"q": ["Give at least one word of 2 characters."]}


async def test_pages_hold_every_entry_once_newest_first(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "EXPORT_CHUNK", 2)
    org_id = await _org(pool)
    written = []
    for n in range(5):
        async with service_tx(pool, org_id=org_id) as tx:
            written.append(str(await service.record(
                tx, WHO, AuditAction.ORG_UPDATED, resource_type="org", details={"n": n})))
    where = AuditFilter(org_id=org_id, action=AuditAction.ORG_UPDATED.value)
    pages = await _ids(pool, org_id, where)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == written[::-1]


async def test_pages_stop_between_pages_once_asked(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "EXPORT_CHUNK", 2)
    org_id = await _org(pool)
    for _ in range(3):
        async with service_tx(pool, org_id=org_id) as tx:
            await service.record(tx, WHO, AuditAction.ORG_UPDATED, resource_type="org")
    where = AuditFilter(org_id=org_id, action=AuditAction.ORG_UPDATED.value)
    pages = service.export_pages(lambda: service_tx(pool, org_id=org_id), where,
                                 json_lines=False, must_stop=lambda: True)
    assert len(await anext(pages)) == 2
    with pytest.raises(service.ExportCut):
        await anext(pages)


async def test_a_filter_that_cannot_match_yields_nothing(pool: asyncpg.Pool) -> None:
    org_id = await _org(pool)
    assert await _ids(pool, org_id, None) == []
