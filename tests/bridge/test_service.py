"""The agent's flows without HTTP (archomata.bridge.service), on the real PostgreSQL: an
agent as its key names it, with a pool-level door into its org, beside the trading desk
whose orders it carries."""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from redis.asyncio import Redis

from archomata.access.caller import Agent
from archomata.access.principal import ActorType
from archomata.audit import AuditContext
from archomata.bridge import service
from archomata.bridge.broadcast import Broadcast
from archomata.bridge.schemas import AccountStateSchema, CommandResultSchema, DealBatchSchema
from archomata.config import Config
from archomata.crypto import DataKeys
from archomata.db import service_tx
from archomata.errors import Conflict, NotFound
from archomata.sealed import SecretUnavailable
from archomata.trading import credentials
from archomata.trading import service as trading
from tests.bridge.test_routes import deal, position, state
from tests.trading.test_service import Desk, actions, desk, draft, place


@pytest.fixture
async def broadcast(config: Config) -> AsyncIterator[Broadcast]:
    """This process's pub/sub listener on the harness's Redis, as an instance runs it."""
    redis = Redis.from_url(config.redis_url.reveal())
    listener = Broadcast(redis, config.redis_url.reveal(), lambda key_id: None)
    listener.start()
    await asyncio.wait_for(listener.subscribed.wait(), 10)
    yield listener
    await listener.stop()
    await redis.aclose()


def agent_of(d: Desk) -> Agent:
    assert d.agent_id is not None
    return Agent(d.org_id, d.agent_id, functools.partial(service_tx, d.pool, org_id=d.org_id))


def as_agent(d: Desk) -> AuditContext:
    return AuditContext(ActorType.AGENT, d.agent_id, request_id=secrets.token_hex(8))


def never_gone() -> bool:
    return False


def result(**body: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = CommandResultSchema().load(body)
    return loaded


async def login_of(owner_conn: Any, d: Desk) -> int:
    login: int = await owner_conn.fetchval("select login from accounts where id = $1",
                                           d.account_id)
    return login


class TestCommands:
    async def test_a_command_is_handed_out_once_and_its_result_recorded_once(
            self, pool: asyncpg.Pool, owner_conn: Any,
            broadcast: Broadcast) -> None:
        d = await desk(pool, owner_conn)
        agent, order = agent_of(d), (await place(d, draft())).order
        [command] = await service.poll(agent, broadcast, 0, 60, never_gone)
        assert (command.type, command.payload["order_id"]) == ("place_order", str(order.id))
        assert await service.poll(agent, broadcast, 0, 60, never_gone) == []
        who = as_agent(d)
        await service.report_result(agent, who, command.id, result(
            status="filled", broker_ticket=777001, price="1.08512"))
        assert await actions(owner_conn, who) == ["order.executed"]
        assert await owner_conn.fetchval("select status from orders where id = $1",
                                         order.id) == "filled"
        with pytest.raises(Conflict) as again:
            await service.report_result(agent, as_agent(d), command.id,
                                        result(status="rejected"))
        assert again.value.code == "already_reported"
        with pytest.raises(NotFound):
            await service.report_result(agent, as_agent(d), uuid4(), result(status="filled"))

    async def test_another_agents_command_is_not_there(self, pool: asyncpg.Pool,
                                                       owner_conn: Any,
                                                       broadcast: Broadcast) -> None:
        mine, theirs = await desk(pool, owner_conn), await desk(pool, owner_conn)
        await place(mine, draft())
        [command] = await service.poll(agent_of(mine), broadcast, 0, 60, never_gone)
        assert await service.poll(agent_of(theirs), broadcast, 0, 60, never_gone) == []
        who = as_agent(theirs)
        with pytest.raises(NotFound):
            await service.report_result(agent_of(theirs), who, command.id,
                                        result(status="filled"))
        assert await actions(owner_conn, who) == []

    async def test_a_poll_whose_client_is_gone_leaves_the_commands_queued(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        d = await desk(pool, owner_conn)
        order = (await place(d, draft())).order
        assert await service.poll(agent_of(d), broadcast, 0, 60, lambda: True) == []
        assert await owner_conn.fetchval("select status from orders where id = $1",
                                         order.id) == "pending"
        [command] = await service.poll(agent_of(d), broadcast, 0, 60, never_gone)
        assert command.payload["order_id"] == str(order.id)


    async def test_a_waiting_poll_is_woken_by_an_order_placed_meanwhile(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        d = await desk(pool, owner_conn)
        waiting = asyncio.create_task(service.poll(agent_of(d), broadcast, 20, 60, never_gone))
        await asyncio.sleep(0.2)  # the poll found nothing and waits
        assert not waiting.done()
        placed = await trading.place_order(d.door(), d.who, broadcast.wake, d.org_id,
                                           d.user_id, d.account_id, draft())
        # Woken well before its 20 s: the wake-up, not the deadline, ended the wait.
        [command] = await asyncio.wait_for(waiting, 10)
        assert command.payload["order_id"] == str(placed.order.id)


    async def test_a_wake_up_of_a_poll_that_left_is_passed_on(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        """An order wakes one poll, the newest: one whose client left before it claimed
        hands the wake-up to another, which answers at once rather than at its deadline."""
        d = await desk(pool, owner_conn)
        waiting = asyncio.create_task(service.poll(agent_of(d), broadcast, 20, 60, never_gone))
        await asyncio.sleep(0.2)
        left = [False]
        leaving = asyncio.create_task(service.poll(agent_of(d), broadcast, 20, 60,
                                                   lambda: left[0]))
        await asyncio.sleep(0.2)
        left[0] = True  # its client hung up; it learns when woken
        placed = await trading.place_order(d.door(), d.who, broadcast.wake, d.org_id,
                                           d.user_id, d.account_id, draft())
        assert await asyncio.wait_for(leaving, 5) == []
        [command] = await asyncio.wait_for(waiting, 5)
        assert command.payload["order_id"] == str(placed.order.id)


class TestTelemetry:
    async def test_state_replaces_the_positions_of_the_agents_account_only(
            self, pool: asyncpg.Pool, owner_conn: Any) -> None:
        d, other = await desk(pool, owner_conn), await desk(pool, owner_conn)
        login = await login_of(owner_conn, d)
        await service.push_state(agent_of(d), login,
                                 AccountStateSchema().load(state(position(1), position(2))))
        await service.push_state(agent_of(d), login,
                                 AccountStateSchema().load(state(position(3))))
        assert [r["ticket"] for r in await owner_conn.fetch(
            "select ticket from positions where account_id = $1", d.account_id)] == [3]
        # Another org's account, by its real login: as missing as one that never was.
        for foreign in (await login_of(owner_conn, other), 1):
            with pytest.raises(NotFound):
                await service.push_state(agent_of(d), foreign,
                                         AccountStateSchema().load(state()))
        assert await owner_conn.fetchval(
            "select count(*) from positions where account_id = $1", other.account_id) == 0

    async def test_deals_known_by_ticket_count_as_duplicates(self, pool: asyncpg.Pool,
                                                             owner_conn: Any) -> None:
        d = await desk(pool, owner_conn)
        login = await login_of(owner_conn, d)
        first = DealBatchSchema().load({"deals": [deal(1), deal(2)]})["deals"]
        assert await service.push_deals(agent_of(d), login, first) == service.Deals(2, 0)
        mixed = DealBatchSchema().load({"deals": [deal(2), deal(3)]})["deals"]
        assert await service.push_deals(agent_of(d), login, mixed) == service.Deals(1, 1)
        with pytest.raises(NotFound):
            await service.push_deals(agent_of(d), login + 1, first)


class TestCredentials:
    async def test_the_fetch_opens_them_and_is_audited_with_the_accounts_it_carried(
            self, pool: asyncpg.Pool, owner_conn: Any, config: Config) -> None:
        d = await desk(pool, owner_conn)
        keys = DataKeys(config.data_key.reveal(), [])
        secret = {"password": "broker-" + secrets.token_hex(4)}
        await owner_conn.execute("select set_config('app.platform', 'on', false)")
        await owner_conn.execute("update accounts set credentials = $2 where id = $1",
                                 d.account_id, credentials.seal(keys, d.account_id, secret))
        who = as_agent(d)
        [item] = await service.assigned_accounts(agent_of(d), who, keys)
        assert (item["id"], item["credentials"]) == (d.account_id, secret)
        [entry] = await owner_conn.fetch(
            "select action, details from audit_log where request_id = $1", who.request_id)
        assert entry["action"] == "agent.credentials_fetched"
        assert secret["password"] not in entry["details"]
        assert str(d.account_id) in entry["details"]

    async def test_credentials_that_do_not_open_answer_secret_unavailable_unaudited(
            self, pool: asyncpg.Pool, owner_conn: Any, config: Config) -> None:
        d = await desk(pool, owner_conn)
        keys = DataKeys(config.data_key.reveal(), [])
        await owner_conn.execute("select set_config('app.platform', 'on', false)")
        # Sealed for another account: moved rows do not open (the account id is bound).
        await owner_conn.execute("update accounts set credentials = $2 where id = $1",
                                 d.account_id, credentials.seal(keys, uuid4(), {"p": "x"}))
        who = as_agent(d)
        with pytest.raises(SecretUnavailable) as refused:
            await service.assigned_accounts(agent_of(d), who, keys)
        assert (refused.value.status, refused.value.code) == (503, "secret_unavailable")
        assert not await owner_conn.fetch(
            "select 1 from audit_log where request_id = $1", who.request_id)


class TestLeases:
    async def test_a_command_with_no_result_comes_back_after_its_lease_once_at_a_time(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        d = await desk(pool, owner_conn)
        agent, order = agent_of(d), (await place(d, draft())).order
        [first] = await service.poll(agent, broadcast, 0, 1, never_gone)
        assert first.attempt == 1
        # With its poll until the lease runs out: no second poll gets it meanwhile.
        assert await service.poll(agent, broadcast, 0, 1, never_gone) == []
        await asyncio.sleep(max(0.0, (first.lease_expires_at - _now()).total_seconds()) + 0.1)
        [second] = await service.poll(agent, broadcast, 0, 1, never_gone)
        assert (second.id, second.attempt, second.payload) == (first.id, 2, first.payload)
        assert second.lease_expires_at > first.lease_expires_at
        # The first attempt's answer arrives late: taken, once; the command is done.
        await service.report_result(agent, as_agent(d), first.id, result(
            status="filled", broker_ticket=5, price="1.1", retcode=10009))
        with pytest.raises(Conflict):
            await service.report_result(agent, as_agent(d), second.id,
                                        result(status="filled", broker_ticket=6))
        await asyncio.sleep(1.1)
        assert await service.poll(agent, broadcast, 0, 1, never_gone) == []
        row = await owner_conn.fetchrow(
            "select status, broker_ticket, retcode from orders where id = $1", order.id)
        assert tuple(row) == ("filled", 5, 10009)

    async def test_an_error_is_terminal_and_keeps_the_brokers_retcode(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        d = await desk(pool, owner_conn)
        agent, order = agent_of(d), (await place(d, draft())).order
        [command] = await service.poll(agent, broadcast, 0, 60, never_gone)
        who = as_agent(d)
        await service.report_result(agent, who, command.id, result(
            status="error", retcode=10031, message="no connection to the trade server"))
        with pytest.raises(Conflict):
            await service.report_result(agent, as_agent(d), command.id,
                                        result(status="filled", broker_ticket=9))
        row = await owner_conn.fetchrow(
            "select status, broker_ticket, retcode, message from orders where id = $1",
            order.id)
        assert tuple(row) == ("error", None, 10031, "no connection to the trade server")
        [entry] = await owner_conn.fetch(
            "select action, details from audit_log where request_id = $1", who.request_id)
        assert entry["action"] == "order.rejected"
        assert '"retcode": 10031' in entry["details"] and '"error"' in entry["details"]

    async def test_a_command_handed_out_is_never_withdrawn_by_a_cancel(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        """Its order may have reached the broker: even with its lease run out, a cancel
        answers order_not_pending and the command goes back to the agent."""
        d = await desk(pool, owner_conn)
        agent, kept = agent_of(d), (await place(d, draft())).order
        [handed] = await service.poll(agent, broadcast, 0, 1, never_gone)
        assert handed.payload["order_id"] == str(kept.id)
        withdrawn = (await place(d, draft())).order  # never handed out
        await asyncio.sleep(1.1)
        with pytest.raises(Conflict) as refused:
            async with d.door()() as tx:
                await trading.cancel_order(tx, d.who, d.org_id, kept.id)
        assert refused.value.code == "order_not_pending"
        async with d.door()() as tx:
            cancelled = await trading.cancel_order(tx, d.who, d.org_id, withdrawn.id)
        assert cancelled.status == "cancelled"
        [again] = await service.poll(agent, broadcast, 0, 60, never_gone)
        assert (again.id, again.attempt) == (handed.id, 2)

    async def test_every_order_carries_its_own_short_tag(
            self, pool: asyncpg.Pool, owner_conn: Any, broadcast: Broadcast) -> None:
        d = await desk(pool, owner_conn)
        placed = [(await place(d, draft())).order for _ in range(5)]
        handed = await service.poll(agent_of(d), broadcast, 0, 60, never_gone)
        tags = [c.payload["client_tag"] for c in handed]
        assert tags == [o.client_tag for o in placed]
        assert len(set(tags)) == 5 and all(len(t) <= 20 and t.isalnum() for t in tags)


def _now() -> datetime:
    return datetime.now(UTC)
