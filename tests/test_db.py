"""Tenant isolation: row-level security holds even for a query that forgets its filter."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from archomata.config import Config
from archomata.db import _scoped_tx, create_pool, service_tx, system_tx
from archomata.errors import Conflict, ValidationFailed
from tests.factories import tenant_account, unique_email


class TestRowLevelSecurity:
    async def test_unfiltered_query_sees_only_the_scoped_org(self, pool: asyncpg.Pool) -> None:
        first, second = await tenant_account(pool), await tenant_account(pool)
        async with service_tx(pool, org_id=first.org.id) as tx:
            # Deliberately no `where org_id = ...`: the policy must still hold.
            seen = {r["org_id"] for r in await tx.fetch("select org_id from memberships")}
            audit_orgs = {r["org_id"] for r in await tx.fetch("select org_id from audit_log")}
        assert seen == {first.org.id}
        assert audit_orgs == {first.org.id}
        assert second.org.id not in seen

    async def test_no_scope_sees_no_org_rows(self, pool: asyncpg.Pool) -> None:
        await tenant_account(pool)
        async with service_tx(pool) as tx:
            assert await tx.fetchval("select count(*) from memberships") == 0
            assert await tx.fetchval("select count(*) from audit_log") == 0

    async def test_scope_cannot_write_into_another_org(self, pool: asyncpg.Pool) -> None:
        first, second = await tenant_account(pool), await tenant_account(pool)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with service_tx(pool, org_id=first.org.id) as tx:
                await tx.execute(
                    "insert into memberships (org_id, user_id, org_role) "
                    "values ($1, $2, 'member')", second.org.id, first.user.id)

    async def test_scope_does_not_leak_to_the_next_transaction(self, pool: asyncpg.Pool) -> None:
        account = await tenant_account(pool)
        async with service_tx(pool, org_id=account.org.id) as tx:
            assert await tx.fetchval("select count(*) from memberships") == 1
        async with pool.acquire() as conn:  # the same pooled connection, no scope set
            assert await conn.fetchval("select count(*) from memberships") == 0

    async def test_failed_transaction_leaves_nothing(self, pool: asyncpg.Pool) -> None:
        email = unique_email()
        async def write_then_fail() -> None:
            async with system_tx(pool) as tx:
                await tx.execute("insert into users (email, email_normalized, name) "
                                 "values ($1, $1, 'x')", email)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await write_then_fail()
        async with system_tx(pool) as tx:
            assert await tx.fetchval("select count(*) from users where email = $1", email) == 0

    async def test_platform_scope_sees_every_org(self, pool: asyncpg.Pool) -> None:
        first, second = await tenant_account(pool), await tenant_account(pool)
        async with system_tx(pool) as tx:
            seen = {r["org_id"] for r in await tx.fetch("select org_id from memberships")}
        assert {first.org.id, second.org.id} <= seen


class TestPoolRelease:
    async def test_release_sends_no_reset_query(self, pool: asyncpg.Pool) -> None:
        sent: list[str] = []

        def log(record: asyncpg.connection.LoggedQuery) -> None:
            sent.append(record.query)

        async with pool.acquire() as conn:
            conn.add_query_logger(log)
            await conn.fetchval("select 1")
        async with pool.acquire() as conn:  # the one connection again
            await conn.fetchval("select 2")
            conn.remove_query_logger(log)
        assert sent == ["select 1", "select 2"]

    async def test_a_transaction_left_open_is_rolled_back_on_release(
            self, pool: asyncpg.Pool) -> None:
        account = await tenant_account(pool)
        async with pool.acquire() as conn:
            await conn.execute(f"BEGIN; SELECT set_config('app.org_id', '{account.org.id}', true)")
            assert await conn.fetchval("select count(*) from memberships") == 1
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("select count(*) from memberships") == 0

    async def test_a_freed_connection_goes_to_the_longest_waiter(self, config: Config) -> None:
        freed = asyncio.Event()

        async def on_release(conn: asyncpg.Connection) -> None:
            freed.set()  # a newcomer becomes ready just as the connection goes back

        pool = await create_pool(config.database_url.reveal(), min_size=1, max_size=1,
                                 reset=on_release)
        turns = asyncio.Semaphore(1)  # one connection, one turn
        order: list[str] = []
        held = asyncio.Event()

        async def first() -> None:
            async with _scoped_tx(pool, turns=turns):
                held.set()
                await asyncio.sleep(0.05)  # `waiting` queues meanwhile

        async def waiting() -> None:
            await held.wait()
            async with _scoped_tx(pool, turns=turns):
                order.append("waiting")

        async def newcomer() -> None:
            await freed.wait()
            async with _scoped_tx(pool, turns=turns):
                order.append("newcomer")

        try:
            await asyncio.wait_for(asyncio.gather(first(), waiting(), newcomer()), timeout=5)
        finally:
            await pool.close()
        # asyncpg alone lets the newcomer take the connection freed for the one waiting.
        assert order == ["waiting", "newcomer"]


class TestDatabaseRefusals:
    """Foreign errors become client errors at the transaction door, nowhere else."""

    async def test_a_unique_violation_is_a_409_with_the_constraints_code(
            self, pool: asyncpg.Pool) -> None:
        account = await tenant_account(pool)
        insert = "insert into groups (org_id, name) values ($1, 'Twins')"
        async with service_tx(pool, org_id=account.org.id) as tx:
            await tx.execute(insert, account.org.id)
        with pytest.raises(Conflict) as raised:
            async with service_tx(pool, org_id=account.org.id) as tx:
                await tx.execute(insert, account.org.id)
        assert raised.value.code == "group_name_taken"
        assert "groups" not in raised.value.detail  # no constraint or table named
        assert isinstance(raised.value.__cause__, asyncpg.UniqueViolationError)

    async def test_an_unlisted_unique_violation_is_a_plain_conflict(
            self, pool: asyncpg.Pool) -> None:
        account = await tenant_account(pool)
        with pytest.raises(Conflict) as raised:
            async with service_tx(pool, org_id=account.org.id) as tx:
                await tx.execute("insert into memberships (org_id, user_id, org_role) "
                                 "values ($1, $2, 'member')", account.org.id, account.user.id)
        assert raised.value.code == "conflict"

    @pytest.mark.parametrize(("sql", "args"), [
        ("select $1::text", ("nul\x00",)),           # PostgreSQL refuses NUL in text
        ("select $1::jsonb", ({"a": "\x00"},)),  # and in jsonb
        ("select $1::bigint", (2**63,)),            # asyncpg refuses it before sending
        ("select 'x'::int", ()),
    ])
    async def test_a_value_the_database_refuses_is_a_422(
            self, pool: asyncpg.Pool, sql: str, args: tuple[object, ...]) -> None:
        with pytest.raises(ValidationFailed):
            async with system_tx(pool) as tx:
                await tx.fetchval(sql, *args)

    async def test_the_servers_own_errors_stay_its_own(self, pool: asyncpg.Pool) -> None:
        with pytest.raises(asyncpg.UndefinedTableError):
            async with system_tx(pool) as tx:
                await tx.fetchval("select 1 from no_such_table")
