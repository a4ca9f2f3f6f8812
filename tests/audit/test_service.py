from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from archomata.access.principal import ActorType
from archomata.audit.actions import AuditAction
from archomata.audit.context import AuditContext
from archomata.audit.service import record, scrub
from archomata.config import Config
from archomata.db import create_pool, service_tx


async def _entry(config: Config) -> UUID:
    pool = await create_pool(config.database_url.reveal(), config, min_size=1, max_size=1)
    try:
        async with service_tx(pool) as tx:
            return await record(tx, AuditContext(ActorType.SYSTEM, None, ip="127.0.0.1"),
                                AuditAction.USER_UPDATED, resource_type="user",
                                details={"password": "hunter2-hunter2", "field": "name"})
    finally:
        await pool.close()


class TestAppendOnly:
    @pytest.mark.parametrize("statement", [
        "update audit_log set action = 'x.y' where id = $1",
        "delete from audit_log where id = $1",
    ])
    async def test_owner_cannot_update_or_delete(self, config: Config, statement: str,
                                                 owner_conn: asyncpg.Connection) -> None:
        entry = await _entry(config)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner_conn.execute(statement, entry)
        assert await owner_conn.fetchval("select count(*) from audit_log where id = $1",
                                         entry) == 1

    async def test_owner_cannot_truncate(self, owner_conn: asyncpg.Connection) -> None:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await owner_conn.execute("truncate audit_log")

    async def test_runtime_role_holds_only_insert_and_select(
            self, owner_conn: asyncpg.Connection) -> None:
        privileges = await owner_conn.fetch(
            "select privilege_type from information_schema.role_table_grants "
            "where table_name = 'audit_log' and grantee = 'archomata_runtime'")
        assert sorted(p["privilege_type"] for p in privileges) == ["INSERT", "SELECT"]

    async def test_secret_details_are_redacted(self, config: Config,
                                               owner_conn: asyncpg.Connection) -> None:
        entry = await _entry(config)
        details = await owner_conn.fetchval("select details from audit_log where id = $1", entry)
        assert "hunter2" not in details
        assert '"field": "name"' in details


class TestScrub:
    def test_nested_secret_keys_are_redacted(self) -> None:
        assert scrub({"a": {"api_key": "k", "ok": [{"refresh_token": "t"}]}}) == \
            {"a": {"api_key": "[redacted]", "ok": [{"refresh_token": "[redacted]"}]}}
