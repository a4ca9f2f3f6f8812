"""The orgs' flows without HTTP, on the real PostgreSQL and Redis: the references an
invitation or a group's roles may name (every unknown id named, another org's group as
unknown as a made-up one), and disabling and enabling an org (Redis's mark ordered
around the commit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from redis.asyncio import Redis

from archomata.audit import AuditContext
from archomata.config import Config
from archomata.db import create_pool, service_tx, system_tx
from archomata.errors import NotFound, ValidationFailed
from archomata.identity.onboarding import create_user_with_org
from archomata.identity.revocation import Revocation
from archomata.orgs.service import check_refs, set_org_disabled
from tests.factories import unique_email


@pytest.fixture
async def pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(config.database_url.reveal(), config)
    yield pool
    await pool.close()


async def org_with_group(pool: asyncpg.Pool, owner_conn: Any) -> tuple[UUID, UUID]:
    account = await create_user_with_org(
        pool, AuditContext.system(), email=unique_email("refs"), name="Refs",
        password_hash=None, org_name="Refs Org", verified=True)
    group_id: UUID = await owner_conn.fetchval(
        "insert into groups (org_id, name) values ($1, 'Desk') returning id", account.org.id)
    return account.org.id, group_id


async def test_known_references_pass_and_every_unknown_one_is_named(
        pool: asyncpg.Pool, owner_conn: Any) -> None:
    org_id, group_id = await org_with_group(pool, owner_conn)
    _, foreign_group = await org_with_group(pool, owner_conn)
    role_id: UUID = await owner_conn.fetchval("select id from roles order by name limit 1")
    made_up_role, made_up_group = uuid4(), uuid4()
    async with service_tx(pool, org_id=org_id) as tx:
        await check_refs(tx, org_id, [role_id], [group_id])
        await check_refs(tx, org_id, [])
        with pytest.raises(ValidationFailed) as caught:
            await check_refs(tx, org_id, [role_id, made_up_role],
                             [group_id, foreign_group, made_up_group])
    assert caught.value.errors == {
        "role_ids": [f"Unknown role {made_up_role}."],
        "group_ids": [f"Unknown group {foreign_group}.", f"Unknown group {made_up_group}."]}


class _Witness(Revocation):
    """The real Revocation (real Redis), noting at each org mark whether the database's
    change was committed yet, as another connection sees it."""

    def __init__(self, redis: Redis, pool: asyncpg.Pool, owner_conn: Any) -> None:
        super().__init__(redis, pool)
        self.owner_conn = owner_conn
        self.seen: list[tuple[bool, bool]] = []  # (the mark, committed disabled_at set)

    async def set_org_disabled(self, org_id: UUID, disabled: bool) -> None:
        committed = await self.owner_conn.fetchval(
            "select disabled_at is not null from orgs where id = $1", org_id)
        self.seen.append((disabled, committed))
        await super().set_org_disabled(org_id, disabled)


class TestSetOrgDisabled:
    async def test_the_mark_is_never_more_lenient_than_the_database(
            self, pool: asyncpg.Pool, config: Config, owner_conn: Any) -> None:
        org_id, _ = await org_with_group(pool, owner_conn)
        redis = Redis.from_url(config.redis_url.reveal())
        witness = _Witness(redis, pool, owner_conn)
        try:
            disabled = await set_org_disabled(lambda: system_tx(pool), AuditContext.system(),
                                              witness, org_id, True)
            assert disabled.disabled and await redis.exists(f"rv:org:{org_id}") == 1
            enabled = await set_org_disabled(lambda: system_tx(pool), AuditContext.system(),
                                             witness, org_id, False)
            assert not enabled.disabled and await redis.exists(f"rv:org:{org_id}") == 0
        finally:
            await redis.aclose()
        # Disabling: Redis first, the commit after; enabling: the commit first.
        assert witness.seen == [(True, False), (False, False)]
        assert await owner_conn.fetchval(
            "select count(*) from audit_log where org_id = $1 and action in "
            "('org.disabled', 'org.enabled')", org_id) == 2

    async def test_an_unknown_org_is_not_found_and_marks_nothing(
            self, pool: asyncpg.Pool, config: Config, owner_conn: Any) -> None:
        redis = Redis.from_url(config.redis_url.reveal())
        witness = _Witness(redis, pool, owner_conn)
        try:
            with pytest.raises(NotFound):
                await set_org_disabled(lambda: system_tx(pool), AuditContext.system(),
                                       witness, uuid4(), True)
        finally:
            await redis.aclose()
        assert witness.seen == []
