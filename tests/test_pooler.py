"""Behind PgBouncer in transaction mode (`ARCHOMATA_DATABASE_POOLER=pgbouncer`) nothing is
kept on a server connection between transactions: a prepared statement left there would
be unknown to the next transaction, which PgBouncer may send to another connection."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import pytest

from archomata.config import Config
from archomata.db import create_pool, service_tx
from archomata.ops.devservers import PostgresServer
from tests.conftest import POOLER

PREPARED = "select count(*) from pg_prepared_statements"


@pytest.mark.parametrize(("pooler", "kept"), [("", True), ("pgbouncer", False)])
async def test_statements_are_prepared_on_a_connection_only_without_a_pooler(
        config: Config, pooler: str, kept: bool) -> None:
    pool = await create_pool(config.database_url.reveal(),
                             dataclasses.replace(config, database_pooler=pooler),
                             min_size=1, max_size=1)
    try:
        async with service_tx(pool) as tx:
            # One transaction: one backend, even behind PgBouncer, whose other clients may
            # have left statements there before (what the pooler setting is about).
            before = await tx.fetchval(PREPARED)
            for _ in range(3):
                assert await tx.fetchval("select $1::int + 1", 1) == 2
            assert (await tx.fetchval(PREPARED) > before) is kept
    finally:
        await pool.close()


def test_the_suite_talks_to_postgresql_the_way_it_was_asked(
        config: Config, postgres: PostgresServer) -> None:
    through_pgbouncer = urlsplit(config.database_url.reveal()).port != postgres.port
    assert through_pgbouncer is (POOLER == "pgbouncer")
    assert config.database_pooler == POOLER
