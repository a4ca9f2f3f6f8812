"""What an MT5 agent does, read top to bottom with no HTTP: a heartbeat, fetching the
credentials of its accounts, pushing an account's state and deals, polling for commands
and reporting a command's outcome.

Each flow is handed the `Agent` its verified key names (archomata.access.caller: its
org, its id, and the door of its org), who asks (an AuditContext), and its collaborators (the
data keys, the broadcast that wakes polls). An agent reaches only the accounts assigned
to it, named by login: anything else raises NotFound, as an account of another org
does. Heartbeats, state and deal pushes are telemetry, not changes anyone made, and are
not audited (a busy terminal would drown the log); fetching credentials and reporting an
order's outcome are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from archomata import audit, db
from archomata.access.caller import Agent
from archomata.audit import AuditAction, AuditContext
from archomata.bridge import agents, commands
from archomata.bridge.broadcast import Broadcast
from archomata.bridge.polls import Poll, Polls
from archomata.crypto import DataKeys
from archomata.errors import Conflict, NotFound
from archomata.trading import credentials
from archomata.trading.store import accounts, market
from archomata.trading.store.accounts import AssignedAccount
from archomata.trading.values import decimal_text

log = logging.getLogger(__name__)
MAX_COMMANDS = 100


@dataclass(frozen=True, slots=True)
class Deals:
    inserted: int
    duplicates: int


async def heartbeat(agent: Agent, version: str, terminals: list[Any] | None) -> None:
    async with agent.tx() as tx:
        await agents.touch(tx, agent.org_id, agent.agent_id, version, terminals)


def _bridge_account(data_keys: DataKeys, assigned: AssignedAccount) -> dict[str, Any]:
    account = assigned.account
    secret = None
    if assigned.credentials is not None:
        # Credentials that do not open answer 503 `secret_unavailable` (logged for the
        # operator, no secret in it): the contract's rule for every stored secret.
        secret = credentials.open_sealed(data_keys, account.id, assigned.credentials)
    return {"id": account.id, "name": account.name, "broker": account.broker,
            "server": account.server, "login": account.login,
            "environment": account.environment, "credentials": secret}


async def assigned_accounts(agent: Agent, who: AuditContext,
                            data_keys: DataKeys) -> list[dict[str, Any]]:
    """The agent's accounts with their credentials opened; the fetch is audited with the
    accounts whose credentials it carried, in the transaction that read them."""
    async with agent.tx() as tx:
        assigned = await accounts.list_for_agent(tx, agent.org_id, agent.agent_id)
        items = [_bridge_account(data_keys, a) for a in assigned]
        await audit.record(tx, who, AuditAction.AGENT_CREDENTIALS_FETCHED,
                           resource_type="agent", resource_id=agent.agent_id,
                           details={"account_ids": [str(i["id"]) for i in items
                                                    if i["credentials"] is not None]})
    return items


def _no_account() -> NotFound:
    return NotFound("No such account.")


async def push_state(agent: Agent, login: int, state: dict[str, Any]) -> None:
    """Balances and the open positions, which replace the previous ones at once (the
    account row locked until the commit, so two pushes never interleave)."""
    async with agent.tx() as tx:
        account_id = await accounts.set_state(tx, agent.org_id, agent.agent_id, login, state)
        if account_id is None:
            raise _no_account()
        await market.replace_positions(tx, agent.org_id, account_id, state["positions"])


async def push_deals(agent: Agent, login: int, columns: Sequence[Sequence[Any]]) -> Deals:
    """New deals recorded; those already known by ticket are counted as duplicates."""
    async with agent.tx() as tx:
        inserted = await market.insert_deals(tx, agent.org_id, agent.agent_id, login, columns)
    if inserted is None:
        raise _no_account()
    return Deals(inserted, len(columns[0]) - inserted)


async def poll(agent: Agent, broadcast: Broadcast, wait: float, lease_seconds: float,
               gone: Callable[[], bool]) -> list[commands.Command]:
    """The agent's commands, each leased to this poll for `lease_seconds` (one with no
    result by then is handed out again); with none, waits up to `wait` seconds for a
    wake-up. Stops claiming as soon as `gone()` says no one would get the commands (the
    client hung up, or the process stops: its waiters are woken then), leaving them
    queued; a poll that dies holding some holds them only until their lease runs out.

    A waiting poll is one of at most polls.MAX_WAITING of its agent, across instances: a
    newer one supersedes it (it answers no commands, claiming nothing more), and an order
    wakes one of them, so the database sees one claim per wake-up however many polls an
    agent opens (archomata.bridge.polls)."""
    if wait <= 0:
        return [] if gone() else await _claim(agent, lease_seconds)
    waiting_polls = broadcast.polls
    with waiting_polls.waiting(agent.agent_id) as waiting:
        try:
            return await _wait_and_claim(agent, waiting_polls, waiting, wait, lease_seconds,
                                         gone)
        finally:
            await waiting_polls.leave(waiting)
            if waiting.wake_pending:  # woken, and gone before it claimed: pass it on
                await waiting_polls.wake_one(agent.agent_id)


async def _wait_and_claim(agent: Agent, waiting_polls: Polls, waiting: Poll, wait: float,
                          lease_seconds: float, gone: Callable[[], bool]
                          ) -> list[commands.Command]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    claimed: list[commands.Command] = []
    while True:
        waiting.woken.clear()  # before claiming: a wake-up from here on is not lost
        if gone() or waiting.superseded:
            break
        if not waiting.registered:  # before the claim: an order after its snapshot finds it
            await waiting_polls.register(waiting)
            if waiting.superseded:
                break
        waiting.wake_pending = False
        claimed = await _claim(agent, lease_seconds)
        remaining = deadline - loop.time()
        if claimed or remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await waiting.woken.wait()
    return claimed


async def _claim(agent: Agent, lease_seconds: float) -> list[commands.Command]:
    async with agent.tx() as tx:
        return await commands.claim(tx, agent.org_id, agent.agent_id, MAX_COMMANDS,
                                    lease_seconds)


async def report_result(agent: Agent, who: AuditContext, command_id: UUID,
                        result: dict[str, Any]) -> None:
    """Records the outcome of a command the agent was handed, from any attempt, once
    (Conflict `already_reported` after), audited in the same transaction. An `error` (the
    agent could not tell the broker's answer) is audited as a rejection, with its status."""
    async with agent.tx() as tx:
        completion = await commands.complete(tx, agent.org_id, agent.agent_id,
                                             command_id, result)
        order = completion.order
        if order is None:
            if not completion.found:
                raise NotFound("No such command.")
            raise Conflict("This command's result was already reported.",
                           code="already_reported")
        action = (AuditAction.ORDER_EXECUTED if result["status"] == "filled"
                  else AuditAction.ORDER_REJECTED)
        await audit.record(tx, who, action, resource_type="order", resource_id=order.id,
                           details={"status": result["status"],
                                    "broker_ticket": result["broker_ticket"],
                                    "price": decimal_text(result["price"]),
                                    "retcode": result["retcode"],
                                    "message": result["message"]})


async def queue_figures(pool: asyncpg.Pool) -> dict[str, float]:
    """The whole bridge queue by state, for the operator's gauges (archomata.metrics):
    one query, at scrape time."""
    async with db.system_tx(pool) as tx:
        return await commands.queue_figures(tx)
