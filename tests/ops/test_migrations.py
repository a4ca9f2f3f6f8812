from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiohttp import web

from archomata.app import SchemaOutdatedError, create_app
from archomata.config import load_config
from archomata.ops.devservers import PostgresServer
from archomata.ops.migrations import RUNTIME_GROUP_ROLE, discover, expected_version, migrate
from tests.conftest import environ_for, make_database

SNAPSHOT = """
    select string_agg(x, E'\\n' order by x) from (
        select 'table ' || relname || ' ' || relrowsecurity || relforcerowsecurity
        from pg_class where relnamespace = 'public'::regnamespace
        union all select 'policy ' || tablename || ' ' || policyname || ' '
            || coalesce(qual, '') || coalesce(with_check, '')
        from pg_policies
        union all select 'grant ' || table_name || ' ' || grantee || ' ' || privilege_type
        from information_schema.role_table_grants where table_schema = 'public'
        union all select 'trigger ' || tgname from pg_trigger where not tgisinternal
    ) s(x)
"""


class TestMigrate:
    async def test_applies_every_file_on_an_empty_database_then_nothing(
            self, postgres: PostgresServer) -> None:
        urls = await make_database(postgres, "mig_twice", migrated=False)
        applied = await migrate(urls.owner, urls.runtime)
        assert [m.version for m in applied] == [m.version for m in discover()]
        conn = await asyncpg.connect(urls.owner)
        try:
            before = await conn.fetchval(SNAPSHOT)
            assert await migrate(urls.owner, urls.runtime) == []
            assert await conn.fetchval(SNAPSHOT) == before
            assert await conn.fetchval("select max(version) from schema_migrations") == \
                expected_version()
        finally:
            await conn.close()

    async def test_two_concurrent_runs_apply_each_file_once(
            self, postgres: PostgresServer) -> None:
        urls = await make_database(postgres, "mig_concurrent", migrated=False)
        first, second = await asyncio.gather(migrate(urls.owner, urls.runtime),
                                             migrate(urls.owner, urls.runtime))
        assert sorted(m.version for m in first + second) == [m.version for m in discover()]

    async def test_runtime_role_owns_nothing_and_cannot_bypass_rls(
            self, owner_conn: asyncpg.Connection) -> None:
        role = await owner_conn.fetchrow(
            "select oid, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles "
            "where rolname = 'archomata_app'")
        assert role is not None
        assert not any([role["rolsuper"], role["rolbypassrls"], role["rolcreaterole"],
                        role["rolcreatedb"]])
        owned = await owner_conn.fetchval(
            "select count(*) from pg_class where relowner = $1", role["oid"])
        assert owned == 0
        member_of = await owner_conn.fetchval(
            "select array_agg(b.rolname) from pg_auth_members m "
            "join pg_roles b on b.oid = m.roleid where m.member = $1", role["oid"])
        assert member_of == [RUNTIME_GROUP_ROLE]

    async def test_every_org_scoped_table_forces_row_level_security(
            self, owner_conn: asyncpg.Connection) -> None:
        rows = await owner_conn.fetch(
            "select c.relname, c.relrowsecurity, c.relforcerowsecurity from pg_class c "
            "join pg_attribute a on a.attrelid = c.oid and a.attname = 'org_id' "
            "where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'")
        assert rows, "no org-scoped table found"
        unprotected = [r["relname"] for r in rows
                       if not (r["relrowsecurity"] and r["relforcerowsecurity"])]
        assert unprotected == []

    async def test_service_refuses_a_database_older_than_the_code(
            self, postgres: PostgresServer, redis_server, mail_sink) -> None:
        urls = await make_database(postgres, "mig_outdated", migrated=False)
        await migrate(urls.owner, urls.runtime)
        conn = await asyncpg.connect(urls.owner)
        await conn.execute("delete from schema_migrations where version = $1",
                           expected_version())
        await conn.close()
        app = create_app(load_config(environ_for(urls, redis_server.url, mail_sink.port)))
        runner = web.AppRunner(app)
        try:
            with pytest.raises(SchemaOutdatedError, match="archomata migrate"):
                await runner.setup()
        finally:
            await runner.cleanup()
