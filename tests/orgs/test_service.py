"""The references an invitation or a group's roles may name, checked without HTTP on the
real PostgreSQL: every unknown id named, another org's group as unknown as a made-up one."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from archomata.audit import AuditContext
from archomata.db import service_tx
from archomata.errors import ValidationFailed
from archomata.identity.onboarding import create_user_with_org
from archomata.orgs.service import check_refs
from tests.factories import unique_email


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
