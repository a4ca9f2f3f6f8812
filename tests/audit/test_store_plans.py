"""Every audit log listing query is served by an index, as the runtime role under
row-level security: bench/audit_plans.py's checks on a smaller table (the bench runs
them on a million entries)."""

from __future__ import annotations

import asyncpg
import pytest

from archomata.ops.devservers import PostgresServer
from bench.audit_plans import BIG_ORG, check, load, report, small_org
from tests.conftest import make_database

ENTRIES = 40_000  # the smallest table on which the plans settle as they do at 1M


@pytest.mark.slow
async def test_every_filter_of_both_listings_uses_its_index(postgres: PostgresServer) -> None:
    urls = await make_database(postgres, "audit_plans")
    owner = await asyncpg.connect(urls.owner)
    try:
        await load(owner, ENTRIES)
    finally:
        await owner.close()
    results = await check(urls.owner, urls.runtime, [BIG_ORG, small_org(7)])
    problems = [r for r in results if r.problems]
    assert not problems, report(problems)
    assert len(results) == 2 * 20
