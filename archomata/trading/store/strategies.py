"""Strategies: a named set of parameters, the accounts they trade, on or off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from archomata import rows
from archomata.db import Tx


@dataclass(frozen=True)
class Strategy:
    id: UUID
    name: str
    description: str
    account_ids: list[UUID]
    parameters: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime


COLUMNS = """s.id, s.name, s.description,
             array(select sa.account_id from strategy_accounts sa
                   where sa.strategy_id = s.id order by sa.account_id) as account_ids,
             s.parameters, s.enabled, s.created_at, s.updated_at"""
UPDATABLE = ("name", "description", "parameters", "enabled")


def _strategy(row: asyncpg.Record | None) -> Strategy | None:
    return None if row is None else rows.from_record(Strategy, row)


COUNT_ACCOUNTS = """
    select count(*) from accounts where org_id = $1 and id = any($2::uuid[]) and deleted_at is null
"""


async def accounts_exist(tx: Tx, org_id: UUID, account_ids: list[UUID]) -> bool:
    found: int = await tx.fetchval(COUNT_ACCOUNTS, org_id, account_ids)
    return found == len(set(account_ids))


INSERT = """
    insert into strategies (org_id, name, description, parameters, enabled)
    values ($1, $2, $3, $4, $5) returning id
"""


async def insert(tx: Tx, org_id: UUID, fields: dict[str, Any]) -> Strategy:
    strategy_id = await tx.fetchval(INSERT, org_id, fields["name"], fields["description"],
                                    fields["parameters"], fields["enabled"])
    await set_accounts(tx, org_id, strategy_id, fields["account_ids"])
    strategy = await get(tx, org_id, strategy_id)
    assert strategy is not None
    return strategy


GET = f"select {COLUMNS} from strategies s where s.org_id = $1 and s.id = $2"


async def get(tx: Tx, org_id: UUID, strategy_id: UUID) -> Strategy | None:
    return _strategy(await tx.fetchrow(GET, org_id, strategy_id))


LIST_PAGE = f"""
    select {COLUMNS} from strategies s
    where s.org_id = $1 and ($2::timestamptz is null or (s.created_at, s.id) < ($2, $3))
    order by s.created_at desc, s.id desc
    limit $4
"""


async def list_page(tx: Tx, org_id: UUID, after: tuple[datetime, UUID] | None,
                    limit: int) -> list[Strategy]:
    at, last_id = after if after else (None, None)
    return rows.from_records(Strategy, await tx.fetch(LIST_PAGE, org_id, at, last_id, limit))


async def update(tx: Tx, org_id: UUID, strategy_id: UUID,
                 changes: dict[str, Any]) -> Strategy | None:
    columns = [c for c in UPDATABLE if c in changes]
    sets = "".join(f"{c} = ${i}, " for i, c in enumerate(columns, 3))
    sql = f"""
        update strategies set {sets}updated_at = now()
        where org_id = $1 and id = $2 returning id
    """
    found = await tx.fetchval(sql, org_id, strategy_id, *(changes[c] for c in columns))
    if found is None:
        return None
    if "account_ids" in changes:
        await set_accounts(tx, org_id, strategy_id, changes["account_ids"])
    return await get(tx, org_id, strategy_id)


CLEAR_ACCOUNTS = "delete from strategy_accounts where org_id = $1 and strategy_id = $2"
INSERT_ACCOUNTS = """
    insert into strategy_accounts (org_id, strategy_id, account_id)
    select $1, $2, a from unnest($3::uuid[]) as a
"""


async def set_accounts(tx: Tx, org_id: UUID, strategy_id: UUID,
                       account_ids: list[UUID]) -> None:
    await tx.execute(CLEAR_ACCOUNTS, org_id, strategy_id)
    await tx.execute(INSERT_ACCOUNTS, org_id, strategy_id, list(dict.fromkeys(account_ids)))


DELETE = "delete from strategies where org_id = $1 and id = $2 returning id"


async def delete(tx: Tx, org_id: UUID, strategy_id: UUID) -> bool:
    return await tx.fetchval(DELETE, org_id, strategy_id) is not None
