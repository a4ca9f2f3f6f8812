"""Every combination of the order and deal lists' filters, with and without a cursor,
returns exactly the rows it should, newest first: the SQL is put together per filter
(archomata.sql), so each combination is its own statement and each is checked here
against the same rows filtered in Python."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from archomata.db import service_tx
from archomata.trading.store import market, orders

START = datetime(2025, 3, 1, tzinfo=UTC)
STATUSES = ("pending", "sent", "filled", "rejected", "cancelled")
SYMBOLS = ("EURUSD", "XAUUSD", "GBPUSD")
ROWS = 60
LIMIT = 7
Rows = tuple[UUID, list[UUID], list[dict[str, Any]]]  # the org, its accounts, the rows


async def _org(owner: asyncpg.Connection) -> tuple[UUID, list[UUID]]:
    org_id, accounts = uuid4(), [uuid4(), uuid4()]
    await owner.execute("insert into orgs (id, name) values ($1, 'Filters')", org_id)
    for n, account in enumerate(accounts, 1):
        await owner.execute(
            "insert into accounts (id, org_id, name, broker, server, login, environment) "
            "values ($1, $2, 'A', 'B', 'S', $3, 'demo')", account, org_id, n)
    return org_id, accounts


def _at(rng: random.Random) -> datetime:
    # Few distinct times: many rows share one, so the id breaks ties.
    return START + timedelta(minutes=rng.randrange(12))


@pytest.fixture
async def orders_org(owner_conn: asyncpg.Connection) -> Rows:
    org_id, accounts = await _org(owner_conn)
    rng = random.Random(25)
    rows = [{"id": uuid4(), "account_id": rng.choice(accounts), "status": rng.choice(STATUSES),
             "created_at": _at(rng)} for _ in range(ROWS)]
    await owner_conn.executemany(
        "insert into orders (id, org_id, account_id, symbol, side, type, volume, status, "
        "created_at, client_tag) values ($1, $2, $3, 'EURUSD', 'buy', 'market', 1, $4, $5, "
        "$6)",
        [(r["id"], org_id, r["account_id"], r["status"], r["created_at"], r["id"].hex[:20])
         for r in rows])
    return org_id, accounts, rows


@pytest.fixture
async def deals_org(owner_conn: asyncpg.Connection) -> Rows:
    org_id, accounts = await _org(owner_conn)
    rng = random.Random(10)
    rows = [{"id": uuid4(), "account_id": rng.choice(accounts), "symbol": rng.choice(SYMBOLS),
             "executed_at": _at(rng), "ticket": n} for n in range(ROWS)]
    await owner_conn.executemany(
        "insert into deals (id, org_id, account_id, ticket, symbol, side, volume, price, "
        "executed_at) values ($1, $2, $3, $4, $5, 'buy', 1, 1.5, $6)",
        [(r["id"], org_id, r["account_id"], r["ticket"], r["symbol"], r["executed_at"])
         for r in rows])
    return org_id, accounts, rows


def _expected(rows: list[dict[str, Any]], at: str, equal: dict[str, Any],
              after: tuple[datetime, UUID] | None, since: datetime | None = None,
              until: datetime | None = None) -> list[UUID]:
    """The rows the list must give: each filter given holds, newest first, after `after`."""
    kept = [r for r in rows if all(v is None or r[k] == v for k, v in equal.items())
            and (since is None or r[at] >= since) and (until is None or r[at] < until)]
    chosen = sorted(kept, key=lambda r: (r[at], r["id"]), reverse=True)
    if after is not None:
        chosen = [r for r in chosen if (r[at], r["id"]) < after]
    return [r["id"] for r in chosen[:LIMIT]]


def _cursors(rows: list[dict[str, Any]], at: str) -> list[tuple[datetime, UUID] | None]:
    ordered = sorted(rows, key=lambda r: (r[at], r["id"]), reverse=True)
    return [None, *((ordered[n][at], ordered[n]["id"]) for n in (5, len(ordered) // 2))]


async def test_every_order_filter_combination_returns_its_rows(
        pool: Any, orders_org: Rows) -> None:
    org_id, accounts, rows = orders_org
    checked = 0
    for account, status, after in itertools.product(
            [None, *accounts], [None, "filled", "rejected"], _cursors(rows, "created_at")):
        filters = {"account_id": account, "status": status}
        async with service_tx(pool, org_id=org_id) as tx:
            found = await orders.list_page(tx, org_id, filters, after, LIMIT)
        expected = _expected(rows, "created_at", filters, after)
        assert [o.id for o in found] == expected, (filters, after)
        checked += bool(expected)
    assert checked >= 20  # the combinations found rows, not only empty pages


async def test_every_deal_filter_combination_returns_its_rows(
        pool: Any, deals_org: Rows) -> None:
    org_id, accounts, rows = deals_org
    since, until = START + timedelta(minutes=3), START + timedelta(minutes=9)
    checked = 0
    for account in accounts:
        mine = [r for r in rows if r["account_id"] == account]
        for symbol, start, end, after in itertools.product(
                [None, "XAUUSD"], [None, since], [None, until], _cursors(mine, "executed_at")):
            filters = {"symbol": symbol, "from": start, "to": end}
            async with service_tx(pool, org_id=org_id) as tx:
                found = await market.list_deals(tx, org_id, account, filters, after, LIMIT)
            expected = _expected(mine, "executed_at", {"symbol": symbol}, after, start, end)
            assert [d.id for d in found] == expected, (filters, after)
            checked += bool(expected)
    assert checked >= 20
