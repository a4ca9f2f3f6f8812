"""What agents report of the market: open positions (replaced whole) and deals (appended,
idempotent by ticket). Both are written with one statement per request, not one per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from archomata import rows
from archomata.db import Tx
from archomata.sql import Params, newest_first
from archomata.trading.risk import Exposure


@dataclass(frozen=True)
class Position:
    id: UUID
    ticket: int
    symbol: str
    side: str
    volume: Decimal
    open_price: Decimal
    current_price: Decimal | None
    sl: Decimal | None
    tp: Decimal | None
    profit: Decimal | None
    opened_at: datetime


@dataclass(frozen=True)
class Deal:
    id: UUID
    ticket: int
    order_ticket: int | None
    position_id: int | None
    symbol: str
    side: str
    volume: Decimal
    price: Decimal
    profit: Decimal
    commission: Decimal
    swap: Decimal
    executed_at: datetime


POSITION_FIELDS = ("ticket", "symbol", "side", "volume", "open_price", "current_price", "sl",
                   "tp", "profit", "opened_at")
DEAL_FIELDS = ("ticket", "order_ticket", "position_id", "symbol", "side", "volume", "price",
               "profit", "commission", "swap", "executed_at")
_POSITION_TYPES = ("bigint", "text", "text", "numeric", "numeric", "numeric", "numeric",
                   "numeric", "numeric", "timestamptz")
_DEAL_TYPES = ("bigint", "bigint", "bigint", "text", "text", "numeric", "numeric", "numeric",
               "numeric", "numeric", "timestamptz")


def _unnest(fields: Sequence[str], types: Sequence[str], first: int) -> str:
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, first))
    return f"unnest({arrays}) as r({', '.join(fields)})"


# The push accounts for every fill recorded before it arrived (now(): when its
# transaction began; a fill still being recorded then is left for the next push), and
# replaces the positions, in one statement.
DELETE_POSITIONS = """
    with reflected as (
        update orders set reflected = true
        where org_id = $1 and account_id = $2 and status = 'filled' and not reflected
          and executed_at < now()
    )
    delete from positions where org_id = $1 and account_id = $2
"""
INSERT_POSITIONS = f"""
    insert into positions (org_id, account_id, {", ".join(POSITION_FIELDS)})
    select $1, $2, {", ".join(f"r.{f}" for f in POSITION_FIELDS)}
    from {_unnest(POSITION_FIELDS, _POSITION_TYPES, 3)}
"""


async def replace_positions(tx: Tx, org_id: UUID, account_id: UUID,
                            columns: Sequence[Sequence[Any]]) -> None:
    """Replaces the account's open positions with `columns` (one list per POSITION_FIELD),
    and marks the fills recorded before this push as reflected in them. Call it in the
    transaction that locked the account (accounts.set_state)."""
    await tx.execute(DELETE_POSITIONS, org_id, account_id)
    if columns and columns[0]:
        await tx.execute(INSERT_POSITIONS, org_id, account_id, *columns)


INSERT_DEALS = f"""
    with account as (
        select id from accounts
        where org_id = $1 and agent_id = $2 and login = $3 and deleted_at is null
    ), inserted as (
        insert into deals (org_id, account_id, {", ".join(DEAL_FIELDS)})
        select $1, account.id, {", ".join(f"r.{f}" for f in DEAL_FIELDS)}
        from account, {_unnest(DEAL_FIELDS, _DEAL_TYPES, 4)}
        on conflict (account_id, ticket) do nothing
        returning 1
    )
    select (select id from account) as account_id, (select count(*) from inserted) as inserted
"""


async def insert_deals(tx: Tx, org_id: UUID, agent_id: UUID, login: int,
                       columns: Sequence[Sequence[Any]]) -> int | None:
    """Inserts the deals not already known (one list per DEAL_FIELD) into the agent's
    account `login`, in one statement; returns how many were new, or None when the agent
    has no such account."""
    row = await tx.fetchrow(INSERT_DEALS, org_id, agent_id, login, *columns)
    assert row is not None
    return None if row["account_id"] is None else int(row["inserted"])


POSITION_COLUMNS = "id, " + ", ".join(POSITION_FIELDS)
LIST_POSITIONS = f"""
    select {POSITION_COLUMNS} from positions
    where org_id = $1 and account_id = $2
      and ($3::text is null or symbol = $3)
      and ($4::timestamptz is null or opened_at >= $4)
      and ($5::timestamptz is null or opened_at < $5)
      and ($6::timestamptz is null or (opened_at, id) < ($6, $7))
    order by opened_at desc, id desc
    limit $8
"""


async def list_positions(tx: Tx, org_id: UUID, account_id: UUID, filters: dict[str, Any],
                         after: tuple[datetime, UUID] | None, limit: int) -> list[Position]:
    at, last_id = after if after else (None, None)
    found = await tx.fetch(LIST_POSITIONS, org_id, account_id, filters.get("symbol"),
                           filters.get("from"), filters.get("to"), at, last_id, limit)
    return rows.from_records(Position, found)


GET_POSITION = f"""
    select {POSITION_COLUMNS} from positions where org_id = $1 and account_id = $2 and ticket = $3
"""


async def get_position(tx: Tx, org_id: UUID, account_id: UUID, ticket: int) -> Position | None:
    row = await tx.fetchrow(GET_POSITION, org_id, account_id, ticket)
    return None if row is None else rows.from_record(Position, row)


# An account's deals, put together per filter (archomata.sql): deals_account_idx, or
# with a symbol sql/021's deals_symbol_idx, walked newest first; from/to bound the walk.
def deals_sql(org_id: UUID, account_id: UUID, filters: dict[str, Any],
              after: tuple[datetime, UUID] | None, limit: int) -> tuple[str, Params]:
    params = Params()
    clauses = [f"org_id = {params(org_id)}", f"account_id = {params(account_id)}"]
    if filters.get("symbol") is not None:
        clauses.append(f"symbol = {params(filters['symbol'])}")
    if filters.get("from") is not None:
        clauses.append(f"executed_at >= {params(filters['from'])}")
    if filters.get("to") is not None:
        clauses.append(f"executed_at < {params(filters['to'])}")
    sql = newest_first(f"select id, {', '.join(DEAL_FIELDS)} from deals", params, clauses,
                       "executed_at", "id", after, limit)
    return sql, params


async def list_deals(tx: Tx, org_id: UUID, account_id: UUID, filters: dict[str, Any],
                     after: tuple[datetime, UUID] | None, limit: int) -> list[Deal]:
    sql, params = deals_sql(org_id, account_id, filters, after, limit)
    return rows.from_records(Deal, await tx.fetch(sql, *params))


# Counted as archomata.trading.risk describes `Exposure.held`, in one snapshot taken under the
# account row lock (accounts.lock_for_order), which state pushes also take. A fill
# committing meanwhile moves an order from in flight to filled: counted either way.
# `unsettled` is what orders_unsettled_idx holds: in flight, or filled and not reflected.
EXPOSURE = """
    with unsettled as (
        select status, position_ticket, broker_ticket from orders
        where org_id = $1 and account_id = $2
          and (status in ('pending', 'sent') or (status = 'filled' and not reflected))
    )
    select (select count(*) from positions where org_id = $1 and account_id = $2)
               as open_positions,
           (select count(*) from unsettled
            where status <> 'filled' and position_ticket is null) as orders_in_flight,
           (select count(*) from unsettled u
            where u.status = 'filled' and u.position_ticket is null
              and not exists (select 1 from positions p
                              where p.org_id = $1 and p.account_id = $2
                                and p.ticket = u.broker_ticket)) as fills_unreported,
           (select count(distinct u.position_ticket) from unsettled u
            where u.status = 'filled'
              and exists (select 1 from positions p
                          where p.org_id = $1 and p.account_id = $2
                            and p.ticket = u.position_ticket)) as closes_unreported,
           (select coalesce(sum(profit + commission + swap), 0) from deals
            where org_id = $1 and account_id = $2
              and executed_at >= date_trunc('day', now() at time zone 'UTC') at time zone 'UTC')
               as realised_today
"""


async def exposure(tx: Tx, org_id: UUID, account_id: UUID) -> Exposure:
    row = await tx.fetchrow(EXPOSURE, org_id, account_id)
    assert row is not None
    return Exposure(int(row["open_positions"]), int(row["orders_in_flight"]),
                    row["realised_today"], int(row["fills_unreported"]),
                    int(row["closes_unreported"]))
