"""The narrow doors of the public routes: a sign-up's transaction reaches its new org and
no other, and an agent key's lookup reads its one row from a transaction that sees no org."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from archomata.bridge import agents
from archomata.db import service_tx, signup_tx
from tests.factories import tenant_account


async def an_agent(owner: asyncpg.Connection, org_id: object) -> str:
    key_id = secrets.token_hex(8)
    await owner.execute("select set_config('app.platform', 'on', false)")
    await owner.execute("insert into agents (org_id, name, key_id, key_hash) "
                        "values ($1, 'door agent', $2, 'not-a-real-hash')", org_id, key_id)
    return key_id


class TestSignUpDoor:
    async def test_it_reads_no_org_but_its_own_new_one(self, pool: asyncpg.Pool) -> None:
        await tenant_account(pool)  # someone else's org, members, roles and entries
        async with signup_tx(pool) as tx:
            assert tx.org_id is not None and not tx.platform
            for table in ("memberships", "member_roles", "audit_log", "invitations",
                          "accounts", "agents"):
                assert await tx.fetchval(f"select count(*) from {table}") == 0, table

    async def test_it_cannot_write_into_another_org(self, pool: asyncpg.Pool) -> None:
        other = await tenant_account(pool)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with signup_tx(pool) as tx:
                await tx.execute("insert into memberships (org_id, user_id, org_role) "
                                 "values ($1, $2, 'member')", other.org.id, other.user.id)

    async def test_each_sign_up_gets_a_fresh_org_id(self, pool: asyncpg.Pool) -> None:
        seen = set()
        for _ in range(3):
            async with signup_tx(pool) as tx:
                seen.add(tx.org_id)
        assert len(seen) == 3


class TestAgentKeyLookup:
    async def test_the_one_row_is_read_and_the_scope_stays_closed(
            self, pool: asyncpg.Pool, owner_conn: asyncpg.Connection) -> None:
        account = await tenant_account(pool)
        key_id = await an_agent(owner_conn, account.org.id)
        async with service_tx(pool) as tx:
            assert await tx.fetchval("select count(*) from agents") == 0
            record = await agents.find_key(tx, key_id)
            assert record is not None and record.org_id == account.org.id
            # The lookup widened nothing for the rest of the transaction.
            assert await tx.fetchval("select count(*) from agents") == 0
            assert await tx.fetchval("select count(*) from memberships") == 0
            assert await agents.find_key(tx, secrets.token_hex(8)) is None
