"""The trading flows without HTTP (archomata.trading.service), on the real PostgreSQL:
an AuditContext, a pool-level door, a wake-up that records when it ran."""

from __future__ import annotations

import functools
import secrets
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from archomata.access.principal import ActorType
from archomata.audit import AuditContext
from archomata.db import service_tx
from archomata.errors import Conflict, NotFound, ValidationFailed
from archomata.identity.onboarding import create_user_with_org
from archomata.trading import service
from archomata.trading.schemas import OrderDraftSchema
from tests.factories import unique_email


class Desk:
    """An org, its trader, an account and (maybe) the agent that carries its orders."""

    def __init__(self, pool: asyncpg.Pool, org_id: UUID, user_id: UUID, account_id: UUID,
                 agent_id: UUID | None) -> None:
        self.pool, self.org_id, self.user_id = pool, org_id, user_id
        self.account_id, self.agent_id = account_id, agent_id
        self.woken: list[tuple[UUID, int]] = []  # (agent, orders committed when woken)
        self.who = AuditContext(ActorType.USER, user_id, request_id=secrets.token_hex(8))

    def door(self) -> Any:
        return functools.partial(service_tx, self.pool, org_id=self.org_id)

    async def wake(self, agent_id: UUID) -> None:
        # Counted from another connection: what it sees is what was committed.
        async with service_tx(self.pool, org_id=self.org_id) as tx:
            committed = await tx.fetchval("select count(*) from orders where org_id = $1",
                                          self.org_id)
        self.woken.append((agent_id, committed))


async def desk(pool: asyncpg.Pool, owner_conn: Any, *, agent: bool = True,
               max_order_volume: Decimal | None = None) -> Desk:
    account = await create_user_with_org(
        pool, AuditContext.system(), email=unique_email("trader"), name="Trader",
        password_hash=None, org_name="Trading Desk", verified=True)
    org_id = account.org.id
    agent_id = await owner_conn.fetchval(
        "insert into agents (org_id, name, key_id, key_hash) values ($1, 'mt5', $2, 'x') "
        "returning id", org_id, secrets.token_hex(8)) if agent else None
    account_id = await owner_conn.fetchval(
        "insert into accounts (org_id, agent_id, name, broker, server, login, environment, "
        "max_order_volume) values ($1, $2, 'Main', 'Broker', 'Server-1', $3, 'demo', $4) "
        "returning id", org_id, agent_id, secrets.randbelow(10**9) + 1, max_order_volume)
    return Desk(pool, org_id, account.user.id, account_id, agent_id)


def draft(volume: str = "0.10", client_order_id: str | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = OrderDraftSchema().load({
        "symbol": "EURUSD", "side": "buy", "type": "market", "volume": volume,
        "client_order_id": client_order_id})
    return loaded


async def actions(owner_conn: Any, who: AuditContext) -> list[str]:
    rows = await owner_conn.fetch(
        "select action from audit_log where request_id = $1 order by seq", who.request_id)
    return [r["action"] for r in rows]


async def place(d: Desk, body: dict[str, Any]) -> service.Placed:
    return await service.place_order(d.door(), d.who, d.wake, d.org_id, d.user_id,
                                     d.account_id, body)


async def test_an_order_is_placed_audited_and_its_agent_woken_after_the_commit(
        pool: asyncpg.Pool, owner_conn: Any) -> None:
    d = await desk(pool, owner_conn)
    placed = await place(d, draft(client_order_id="first-1"))
    assert not placed.replayed and placed.order.status == "pending"
    assert d.woken == [(d.agent_id, 1)]  # the order was committed when the agent heard
    again = await place(d, draft(client_order_id="first-1"))
    assert again.replayed and again.order.id == placed.order.id
    assert len(d.woken) == 1  # a replay wakes no one
    assert await actions(owner_conn, d.who) == ["order.created"]
    with pytest.raises(Conflict) as reused:
        await place(d, draft(volume="0.20", client_order_id="first-1"))
    assert reused.value.code == "client_order_id_reused"


async def test_a_breach_is_refused_and_stays_on_record(pool: asyncpg.Pool,
                                                      owner_conn: Any) -> None:
    d = await desk(pool, owner_conn, max_order_volume=Decimal("0.05"))
    with pytest.raises(ValidationFailed) as refused:
        await place(d, draft(volume="0.10"))
    assert refused.value.code == "risk_limit_exceeded"
    assert await owner_conn.fetchval("select count(*) from orders where org_id = $1",
                                     d.org_id) == 0
    assert await actions(owner_conn, d.who) == ["order.rejected"]
    assert d.woken == []


async def test_an_account_without_an_agent_takes_no_order(pool: asyncpg.Pool,
                                                          owner_conn: Any) -> None:
    d = await desk(pool, owner_conn, agent=False)
    with pytest.raises(Conflict) as refused:
        await place(d, draft())
    assert refused.value.code == "no_agent"
    with pytest.raises(NotFound):
        await service.place_order(d.door(), d.who, d.wake, d.org_id, d.user_id,
                                  UUID(int=1), draft())


async def test_an_order_is_cancelled_once_and_only_while_pending(
        pool: asyncpg.Pool, owner_conn: Any) -> None:
    d = await desk(pool, owner_conn)
    order = (await place(d, draft())).order
    async with d.door()() as tx:
        cancelled = await service.cancel_order(tx, d.who, d.org_id, order.id)
    assert cancelled.status == "cancelled"
    async with d.door()() as tx:
        with pytest.raises(Conflict) as twice:
            await service.cancel_order(tx, d.who, d.org_id, order.id)
    assert twice.value.code == "order_not_pending"
    other = await desk(pool, owner_conn)  # another org's door does not find it
    async with other.door()() as tx:
        with pytest.raises(NotFound):
            await service.cancel_order(tx, other.who, other.org_id, order.id)
    assert await actions(owner_conn, d.who) == ["order.created", "order.cancelled"]


async def test_a_position_is_closed_by_an_opposite_market_order(
        pool: asyncpg.Pool, owner_conn: Any) -> None:
    d = await desk(pool, owner_conn)
    await owner_conn.execute(
        "insert into positions (org_id, account_id, ticket, symbol, side, volume, "
        "open_price, opened_at) values ($1, $2, 77, 'EURUSD', 'buy', 0.30, 1.1, now())",
        d.org_id, d.account_id)
    async with d.door()() as tx:
        order = await service.close_position(tx, d.who, d.wake, d.org_id, d.user_id,
                                             d.account_id, 77)
    assert (order.side, order.type, order.volume) == ("sell", "market", Decimal("0.30"))
    assert d.woken == [(d.agent_id, 1)]
    async with d.door()() as tx:
        with pytest.raises(Conflict) as closing:
            await service.close_position(tx, d.who, d.wake, d.org_id, d.user_id,
                                         d.account_id, 77)
    assert closing.value.code == "position_closing"
