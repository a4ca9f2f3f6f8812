"""MT5 trading accounts: what people configure, what agents report, their risk limits.

Deleting an account is soft (`deleted_at`): its orders and deals stay for the record,
but it answers 404 everywhere, leaves its agent and its strategies, and has its pending
commands cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from archomata import rows
from archomata.db import Tx
from archomata.trading.custody import Holding
from archomata.trading.risk import RiskLimits


@dataclass(frozen=True)
class Account:
    id: UUID
    agent_id: UUID | None
    name: str
    broker: str
    server: str
    login: int
    environment: str
    has_credentials: bool
    balance: Decimal | None
    equity: Decimal | None
    margin: Decimal | None
    free_margin: Decimal | None
    currency: str | None
    state_updated_at: datetime | None
    created_at: datetime
    updated_at: datetime


COLUMNS = """id, agent_id, name, broker, server, login, environment,
             credentials is not null as has_credentials, balance, equity, margin,
             free_margin, currency, state_updated_at, created_at, updated_at"""
LIMIT_COLUMNS = "trading_enabled, max_order_volume, max_open_positions, max_daily_loss"
# The columns a PATCH may set (names are code, never client text).
UPDATABLE = ("name", "broker", "server", "login", "environment", "agent_id", "credentials")


def _account(row: asyncpg.Record | None) -> Account | None:
    return None if row is None else rows.from_record(Account, row)


def _limits(row: asyncpg.Record) -> RiskLimits:
    return RiskLimits(row["trading_enabled"], row["max_order_volume"],
                      row["max_open_positions"], row["max_daily_loss"])


INSERT = f"""
    insert into accounts (id, org_id, name, broker, server, login, environment, agent_id,
                          credentials)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    returning {COLUMNS}
"""


async def insert(tx: Tx, account_id: UUID, org_id: UUID, fields: dict[str, Any]) -> Account:
    """A new account; `fields` holds name, broker, server, login, environment, agent_id
    and credentials (already sealed)."""
    row = await tx.fetchrow(INSERT, account_id, org_id, fields["name"], fields["broker"],
                            fields["server"], fields["login"], fields["environment"],
                            fields.get("agent_id"), fields.get("credentials"))
    account = _account(row)
    assert account is not None
    return account


GET = f"select {COLUMNS} from accounts where org_id = $1 and id = $2 and deleted_at is null"


async def get(tx: Tx, org_id: UUID, account_id: UUID) -> Account | None:
    return _account(await tx.fetchrow(GET, org_id, account_id))


LIST_PAGE = f"""
    select {COLUMNS} from accounts
    where org_id = $1 and deleted_at is null
      and ($2::timestamptz is null or (created_at, id) < ($2, $3))
    order by created_at desc, id desc
    limit $4
"""


async def list_page(tx: Tx, org_id: UUID, after: tuple[datetime, UUID] | None,
                    limit: int) -> list[Account]:
    at, last_id = after if after else (None, None)
    return rows.from_records(Account, await tx.fetch(LIST_PAGE, org_id, at, last_id, limit))


async def update(tx: Tx, org_id: UUID, account_id: UUID,
                 changes: dict[str, Any]) -> Account | None:
    columns = [c for c in UPDATABLE if c in changes]
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, 3))
    sql = f"""
        update accounts set {sets}{", " if sets else ""}updated_at = now()
        where org_id = $1 and id = $2 and deleted_at is null
        returning {COLUMNS}
    """
    return _account(await tx.fetchrow(sql, org_id, account_id, *(changes[c] for c in columns)))


SOFT_DELETE = """
    with gone as (
        update accounts set deleted_at = now(), agent_id = null, credentials = null,
                            updated_at = now()
        where org_id = $1 and id = $2 and deleted_at is null
        returning id
    ), commands as (
        update commands set status = 'cancelled', completed_at = now()
        where account_id in (select id from gone) and status = 'pending'
    ), orders as (
        update orders set status = 'cancelled', updated_at = now(),
                          message = 'The account was deleted.'
        where account_id in (select id from gone) and status = 'pending'
    ), links as (
        delete from strategy_accounts where account_id in (select id from gone)
    )
    select count(*) from gone
"""


async def soft_delete(tx: Tx, org_id: UUID, account_id: UUID) -> bool:
    return bool(await tx.fetchval(SOFT_DELETE, org_id, account_id))


AGENT_OF = "select agent_id from accounts where org_id = $1 and id = $2 and deleted_at is null"


async def agent_of(tx: Tx, org_id: UUID, account_id: UUID) -> UUID | None:
    """The account's agent, unlocked (None also when there is no such account)."""
    agent_id: UUID | None = await tx.fetchval(AGENT_OF, org_id, account_id)
    return agent_id


LOCK_HOLDING = """
    select agent_id, credentials is not null as has_credentials, broker, server from accounts
    where org_id = $1 and id = $2 and deleted_at is null
    for update
"""


async def lock_holding(tx: Tx, org_id: UUID, account_id: UUID) -> Holding | None:
    """Locks the account row; returns who and where its credentials reach."""
    row = await tx.fetchrow(LOCK_HOLDING, org_id, account_id)
    return None if row is None else Holding(row["agent_id"], row["has_credentials"],
                                            (row["broker"], row["server"]))


CREDENTIALED_FOR_AGENT = """
    select count(*) from accounts
    where org_id = $1 and agent_id = $2 and credentials is not null and deleted_at is null
"""


async def credentialed_for_agent(tx: Tx, org_id: UUID, agent_id: UUID) -> int:
    """How many accounts with credentials the agent serves (lock the agent first)."""
    return int(await tx.fetchval(CREDENTIALED_FOR_AGENT, org_id, agent_id))


GET_LIMITS = f"""
    select {LIMIT_COLUMNS} from accounts where org_id = $1 and id = $2 and deleted_at is null
"""


async def get_limits(tx: Tx, org_id: UUID, account_id: UUID) -> RiskLimits | None:
    row = await tx.fetchrow(GET_LIMITS, org_id, account_id)
    return None if row is None else _limits(row)


SET_LIMITS = f"""
    update accounts set trading_enabled = $3, max_order_volume = $4, max_open_positions = $5,
                        max_daily_loss = $6, updated_at = now()
    where org_id = $1 and id = $2 and deleted_at is null
    returning {LIMIT_COLUMNS}
"""


async def set_limits(tx: Tx, org_id: UUID, account_id: UUID,
                     limits: RiskLimits) -> RiskLimits | None:
    row = await tx.fetchrow(SET_LIMITS, org_id, account_id, limits.trading_enabled,
                            limits.max_order_volume, limits.max_open_positions,
                            limits.max_daily_loss)
    return None if row is None else _limits(row)


LOCK_FOR_ORDER = f"""
    select agent_id, {LIMIT_COLUMNS} from accounts
    where org_id = $1 and id = $2 and deleted_at is null
    for update
"""


async def lock_for_order(tx: Tx, org_id: UUID,
                         account_id: UUID) -> tuple[UUID | None, RiskLimits] | None:
    """Locks the account row, so that orders on one account are checked one at a time;
    returns its agent and risk limits."""
    row = await tx.fetchrow(LOCK_FOR_ORDER, org_id, account_id)
    return None if row is None else (row["agent_id"], _limits(row))


# --- the bridge's view: accounts by agent and login ------------------------------------

@dataclass(frozen=True)
class AssignedAccount:
    account: Account
    credentials: bytes | None


LIST_FOR_AGENT = f"""
    select {COLUMNS}, credentials from accounts
    where org_id = $1 and agent_id = $2 and deleted_at is null
    order by login
"""


async def list_for_agent(tx: Tx, org_id: UUID, agent_id: UUID) -> list[AssignedAccount]:
    found = await tx.fetch(LIST_FOR_AGENT, org_id, agent_id)
    return [AssignedAccount(a, r["credentials"]) for r in found
            if (a := _account(r)) is not None]


SET_STATE = """
    update accounts set balance = $4, equity = $5, margin = $6, free_margin = $7,
                        currency = $8, state_updated_at = now()
    where org_id = $1 and agent_id = $2 and login = $3 and deleted_at is null
    returning id
"""


async def set_state(tx: Tx, org_id: UUID, agent_id: UUID, login: int,
                    state: dict[str, Any]) -> UUID | None:
    """Writes the balances an agent reports (locking the row until commit); returns the
    account id, or None when the agent has no such account."""
    account_id: UUID | None = await tx.fetchval(
        SET_STATE, org_id, agent_id, login, state["balance"], state["equity"], state["margin"],
        state["free_margin"], state["currency"])
    return account_id


ALL_CREDENTIALS = """
    select id, credentials from accounts where credentials is not null order by id for update
"""


async def all_credentials(tx: Tx) -> list[tuple[UUID, bytes]]:
    """Every stored credential blob, locked, for re-encryption (a platform transaction)."""
    return [(r["id"], r["credentials"]) for r in await tx.fetch(ALL_CREDENTIALS)]


SET_CREDENTIALS_MANY = """
    update accounts a set credentials = r.blob
    from unnest($1::uuid[], $2::bytea[]) as r(id, blob) where a.id = r.id
"""


async def set_credentials_many(tx: Tx, blobs: list[tuple[UUID, bytes]]) -> None:
    if blobs:
        await tx.execute(SET_CREDENTIALS_MANY, [i for i, _ in blobs], [b for _, b in blobs])

