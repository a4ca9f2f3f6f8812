"""The member, order and deal lists walk an index in their order and stop at a page, as
the runtime role under row-level security, for every filter they offer: no sequential
scan and no sort of the big table, in the plan PostgreSQL makes for the values at hand
and in the generic plan it settles on after a few executions (the plan that `$n is null
or ...` made slow). bench/scale.py measures the same lists over HTTP; the audit log's
are tested in tests/audit/test_store_plans.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from archomata.ops.devservers import PostgresServer
from archomata.orgs.store import members
from archomata.trading.store import market, orders
from bench.scale import Org, load
from tests.conftest import make_database

ROWS = 20_000  # of each: enough for the planner to prefer a walk to a scan and sort
PAGE = 51
CURSOR = (datetime(2024, 1, 1, 3, tzinfo=UTC), UUID(int=0))
FROM = datetime(2024, 1, 1, 1, tzinfo=UTC)
TO = datetime(2024, 1, 1, 2, tzinfo=UTC)


def cases(org: Org) -> list[tuple[str, str, list[Any], str]]:
    """(name, SQL, parameters, the index the plan must walk) of every filter."""
    found = [
        ("members", members.LIST_PAGE, [org.org_id, PAGE], "memberships_org_joined_idx"),
        ("members, next page", members.LIST_AFTER, [org.org_id, *CURSOR, PAGE],
         "memberships_org_joined_idx"),
    ]
    order_filters: list[tuple[dict[str, Any], str]] = [
        ({}, "orders_org_idx"),
        ({"account_id": org.side}, "orders_account_idx"),
        ({"status": "rejected"}, "orders_org_status_idx"),
        ({"account_id": org.side, "status": "rejected"}, "orders_account_status_idx"),
    ]
    for filters, index in order_filters:
        for after in (None, CURSOR):
            sql, params = orders.list_sql(org.org_id, filters, after, PAGE)
            found.append((f"orders {sorted(filters)}{' after' if after else ''}", sql,
                          list(params), index))
    deal_filters: list[tuple[dict[str, Any], str]] = [
        ({}, "deals_account_idx"),
        ({"symbol": "XAUUSD"}, "deals_symbol_idx"),
        ({"from": FROM, "to": TO}, "deals_account_idx"),
        ({"symbol": "XAUUSD", "from": FROM}, "deals_symbol_idx"),
    ]
    for filters, index in deal_filters:
        for after in (None, CURSOR):
            sql, params = market.deals_sql(org.org_id, org.main, filters, after, PAGE)
            found.append((f"deals {sorted(filters)}{' after' if after else ''}", sql,
                          list(params), index))
    return found


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(n for child in plan.get("Plans", []) for n in _nodes(child))]


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def _plans(runtime: asyncpg.Connection, org: Org, sql: str,
                 params: list[Any]) -> dict[str, dict[str, Any]]:
    """The custom plan (EXPLAIN with the values) and the generic one (a prepared
    statement forced to its generic plan), in the org's row-level-security scope."""
    found = {}
    async with runtime.transaction():
        await runtime.execute("select set_config('app.org_id', $1, true)", str(org.org_id))
        found["custom"] = json.loads(await runtime.fetchval(
            f"explain (format json) {sql}", *params))[0]["Plan"]
        await runtime.execute("set local plan_cache_mode = force_generic_plan")
        await runtime.execute(f"prepare listing as {sql}")
        try:
            values = ", ".join(_literal(v) for v in params)
            found["generic"] = json.loads(await runtime.fetchval(
                f"explain (format json) execute listing({values})"))[0]["Plan"]
        finally:
            await runtime.execute("deallocate listing")
    return found


def problems(plan: dict[str, Any], index: str) -> list[str]:
    nodes = _nodes(plan)
    found = [f"{n['Node Type']} {n.get('Relation Name', '')}" for n in nodes
             if n["Node Type"] in {"Seq Scan", "Sort", "Incremental Sort"}]
    walks = [n.get("Index Name") for n in nodes
             if n["Node Type"] in {"Index Scan", "Index Only Scan"}]
    if index not in walks:
        found.append(f"does not walk {index}: {walks}")
    return found


@pytest.mark.slow
async def test_every_filter_of_the_member_order_and_deal_lists_walks_its_index(
        postgres: PostgresServer) -> None:
    urls = await make_database(postgres, "list_plans")
    org = await load(urls.owner, urls.runtime, ROWS)
    runtime = await asyncpg.connect(urls.runtime)
    try:
        report = []
        for name, sql, params, index in cases(org):
            for kind, plan in (await _plans(runtime, org, sql, params)).items():
                found = problems(plan, index)
                if found:
                    report.append(f"{name} ({kind} plan): {'; '.join(found)}")
    finally:
        await runtime.close()
    assert not report, "\n".join(report)
