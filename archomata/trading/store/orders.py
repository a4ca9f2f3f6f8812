"""Orders, and the commands that carry them to the account's agent.

    order:    pending -> sent (an agent was handed its command) -> filled | rejected | error
              pending -> cancelled

Placing an order puts its command in the queue, and cancelling a pending order withdraws
its command, in the same statements; the agents lease the commands and report their
results through archomata.bridge.commands, which records a result here (`record_result`).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg

from archomata import rows
from archomata.db import Tx
from archomata.trading.values import with_decimal_texts


@dataclass(frozen=True)
class Order:
    id: UUID
    account_id: UUID
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    volume: Decimal
    price: Decimal | None
    sl: Decimal | None
    tp: Decimal | None
    position_ticket: int | None
    status: str
    broker_ticket: int | None
    fill_price: Decimal | None
    message: str | None
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
    executed_at: datetime | None
    client_tag: str
    retcode: int | None


def new_client_tag() -> str:
    """An order's tag for the MT5 order comment: 20 characters (comments are short), 90
    random bits, so no two orders share one."""
    return "am" + base64.b32encode(secrets.token_bytes(12)).decode()[:18].lower()


COLUMNS = ", ".join(rows.field_names(Order))


def _order(row: asyncpg.Record | None) -> Order | None:
    return None if row is None else rows.from_record(Order, row)


INSERT = f"""
    insert into orders (org_id, account_id, client_order_id, symbol, side, type, volume, price,
                        sl, tp, position_ticket, created_by, client_tag)
    values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    returning {COLUMNS}
"""
INSERT_COMMAND = """
    insert into commands (org_id, account_id, order_id, type, payload)
    values ($1, $2, $3, $4, $5)
"""


async def insert(tx: Tx, org_id: UUID, account_id: UUID, draft: dict[str, Any],
                 created_by: UUID | None, command_type: str) -> Order:
    """The order and its command for the agent, in the caller's transaction."""
    row = await tx.fetchrow(INSERT, org_id, account_id, draft.get("client_order_id"),
                            draft["symbol"], draft["side"], draft["type"], draft["volume"],
                            draft.get("price"), draft.get("sl"), draft.get("tp"),
                            draft.get("position_ticket"), created_by, new_client_tag())
    order = _order(row)
    assert order is not None
    await tx.execute(INSERT_COMMAND, org_id, account_id, order.id, command_type,
                     command_payload(order))
    return order


def command_payload(order: Order) -> dict[str, Any]:
    """What the agent needs to execute the order; decimals as strings."""
    payload = with_decimal_texts({
        "order_id": str(order.id), "symbol": order.symbol, "side": order.side,
        "type": order.type, "volume": order.volume, "price": order.price, "sl": order.sl,
        "tp": order.tp, "client_tag": order.client_tag})
    if order.position_ticket is not None:
        payload["ticket"] = order.position_ticket
    return payload


BY_CLIENT_ID = f"""
    select {COLUMNS} from orders where org_id = $1 and account_id = $2 and client_order_id = $3
"""


async def by_client_id(tx: Tx, org_id: UUID, account_id: UUID,
                       client_order_id: str) -> Order | None:
    return _order(await tx.fetchrow(BY_CLIENT_ID, org_id, account_id, client_order_id))


GET = f"select {COLUMNS} from orders where org_id = $1 and id = $2"


async def get(tx: Tx, org_id: UUID, order_id: UUID) -> Order | None:
    return _order(await tx.fetchrow(GET, org_id, order_id))


LIST_PAGE = f"""
    select {COLUMNS} from orders
    where org_id = $1
      and ($2::uuid is null or account_id = $2)
      and ($3::text is null or status = $3)
      and ($4::timestamptz is null or (created_at, id) < ($4, $5))
    order by created_at desc, id desc
    limit $6
"""


async def list_page(tx: Tx, org_id: UUID, filters: dict[str, Any],
                    after: tuple[datetime, UUID] | None, limit: int) -> list[Order]:
    at, last_id = after if after else (None, None)
    found = await tx.fetch(LIST_PAGE, org_id, filters.get("account_id"),
                           filters.get("status"), at, last_id, limit)
    return rows.from_records(Order, found)


CANCEL = f"""
    with command as (
        update commands set status = 'cancelled', completed_at = now()
        where org_id = $1 and order_id = $2 and status = 'pending'
        returning order_id
    )
    update orders set status = 'cancelled', updated_at = now()
    where org_id = $1 and id in (select order_id from command) and status = 'pending'
    returning {COLUMNS}
"""


async def cancel(tx: Tx, org_id: UUID, order_id: UUID) -> Order | None:
    """Cancels the order if no agent has claimed it yet; None otherwise."""
    return _order(await tx.fetchrow(CANCEL, org_id, order_id))


# Terminal states never change: only an order on its way takes a result.
RECORD_RESULT = f"""
    update orders set status = $3, broker_ticket = $4, fill_price = $5, message = $6,
                      retcode = $7,
                      executed_at = case when $3 = 'filled' then now() end, updated_at = now()
    where org_id = $1 and id = $2 and status in ('pending', 'sent')
    returning {COLUMNS}
"""


async def record_result(tx: Tx, org_id: UUID, order_id: UUID,
                        result: dict[str, Any]) -> Order | None:
    """An agent's result on the order, once its command took it (bridge.commands)."""
    return _order(await tx.fetchrow(RECORD_RESULT, org_id, order_id, result["status"],
                                    result.get("broker_ticket"), result.get("price"),
                                    result.get("message"), result.get("retcode")))


# A close is under way from the moment it is placed until a state push arrives after it
# filled (then the push says whether the position is still open); a rejected or failed
# close ends it at once. Served by orders_unsettled_idx.
CLOSING = """
    select 1 from orders
    where org_id = $1 and account_id = $2 and position_ticket = $3
      and (status in ('pending', 'sent') or (status = 'filled' and not reflected))
    limit 1
"""


async def closing(tx: Tx, org_id: UUID, account_id: UUID, ticket: int) -> bool:
    """Whether an order closing this position is on its way, or filled and not yet
    reflected by a state push. Call it with the account locked (accounts.lock_for_order)."""
    return await tx.fetchval(CLOSING, org_id, account_id, ticket) is not None
