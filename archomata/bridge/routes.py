"""/bridge: what MT5 agents call with their API key (`X-API-Key`).

An agent sees only the accounts assigned to it, named by login; anything else is 404.
Every query is scoped by org_tx to the agent's org and by the agent id in the SQL.
Heartbeats, state and deal pushes are telemetry, not changes anyone made: they are not
audited (a busy terminal would drown the log); fetching credentials and reporting an
order's outcome are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit, keys
from archomata.access.guards import agent_only
from archomata.access.route_policy import TimeoutClass
from archomata.audit import AuditAction
from archomata.bridge import store as agents
from archomata.bridge.schemas import (
    AccountStateSchema,
    BridgeAccountListSchema,
    CommandListSchema,
    CommandResultSchema,
    CommandsQuerySchema,
    DealBatchResultSchema,
    DealBatchSchema,
    HeartbeatResultSchema,
    HeartbeatSchema,
)
from archomata.crypto import DecryptionError
from archomata.db import org_tx
from archomata.errors import Conflict, NotFound
from archomata.trading import credentials
from archomata.trading.store import accounts, market, orders
from archomata.trading.store.accounts import AssignedAccount
from archomata.trading.values import decimal_text
from archomata.web.json_io import json_response, load_body, validate
from archomata.web.openapi import doc
from archomata.web.params import caller, client_gone, int_param, uuid_param

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
MAX_COMMANDS = 100


def _agent(request: web.Request) -> tuple[UUID, UUID]:
    org_id, principal = caller(request)
    return org_id, principal.actor_id


@routes.post("/api/v1/bridge/heartbeat")
@agent_only
@doc("Report that the agent is alive, and its version", request=HeartbeatSchema,
     response=HeartbeatResultSchema)
async def heartbeat(request: web.Request) -> web.Response:
    org_id, agent_id = _agent(request)
    body = await load_body(request, HeartbeatSchema)
    async with org_tx(request) as tx:
        await agents.touch(tx, org_id, agent_id, body["version"], body["terminals"])
    return json_response({"server_time": datetime.now(UTC)})


def _bridge_account(request: web.Request, assigned: AssignedAccount) -> dict[str, Any]:
    account = assigned.account
    secret = None
    if assigned.credentials is not None:
        try:
            secret = credentials.open_sealed(request.app[keys.DATA_KEYS], account.id,
                                             assigned.credentials)
        except DecryptionError:
            # The other accounts stay usable; this one needs its credentials set again
            # (or the previous data key configured). Logged without any secret.
            log.error("stored credentials do not open", extra={"account_id": str(account.id)})
    return {"id": account.id, "name": account.name, "broker": account.broker,
            "server": account.server, "login": account.login,
            "environment": account.environment, "credentials": secret}


@routes.get("/api/v1/bridge/accounts")
@agent_only
@doc("The accounts assigned to this agent, with their credentials (audited)",
     response=BridgeAccountListSchema)
async def list_bridge_accounts(request: web.Request) -> web.Response:
    org_id, agent_id = _agent(request)
    async with org_tx(request) as tx:
        assigned = await accounts.list_for_agent(tx, org_id, agent_id)
        items = [_bridge_account(request, a) for a in assigned]
        await audit.record(tx, request, AuditAction.AGENT_CREDENTIALS_FETCHED,
                           resource_type="agent", resource_id=agent_id,
                           details={"account_ids": [str(i["id"]) for i in items
                                                    if i["credentials"] is not None]})
    return json_response({"items": items, "next_cursor": None})


@routes.put("/api/v1/bridge/accounts/{login}/state")
@agent_only
@doc("Report balances and the open positions, which replace the previous ones at once",
     request=AccountStateSchema, status=204)
async def put_account_state(request: web.Request) -> web.Response:
    org_id, agent_id = _agent(request)
    login = int_param(request, "login")
    state = await load_body(request, AccountStateSchema)
    async with org_tx(request) as tx:
        account_id = await accounts.set_state(tx, org_id, agent_id, login, state)
        if account_id is None:
            raise NotFound("No such account.")
        await market.replace_positions(tx, org_id, account_id, state["positions"])
    return web.Response(status=204)


@routes.post("/api/v1/bridge/accounts/{login}/deals")
@agent_only
@doc("Report deals (at most 1000); deals already known by ticket are counted as "
     "duplicates", request=DealBatchSchema, response=DealBatchResultSchema)
async def post_deals(request: web.Request) -> web.Response:
    org_id, agent_id = _agent(request)
    login = int_param(request, "login")
    columns = (await load_body(request, DealBatchSchema))["deals"]
    async with org_tx(request) as tx:
        inserted = await market.insert_deals(tx, org_id, agent_id, login, columns)
    if inserted is None:
        raise NotFound("No such account.")
    return json_response({"inserted": inserted, "duplicates": len(columns[0]) - inserted})


@routes.get("/api/v1/bridge/commands")
@agent_only(timeout=TimeoutClass.LONG_POLL)
@doc("Commands for this agent's accounts; with `wait`, holds the request up to that many "
     "seconds until one arrives. Each command is handed out once.",
     query=CommandsQuerySchema, response=CommandListSchema)
async def poll_commands(request: web.Request) -> web.Response:
    org_id, agent_id = _agent(request)
    wait = validate(CommandsQuerySchema, dict(request.query))["wait"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    claimed: list[orders.Command] = []
    with request.app[keys.BROADCAST].waiter(agent_id) as woken:
        while True:
            woken.clear()  # before claiming: a wake-up from here on is not lost
            if client_gone(request):  # nobody to hand commands to: leave them queued
                break
            async with org_tx(request) as tx:
                claimed = await orders.claim(tx, org_id, agent_id, MAX_COMMANDS)
            remaining = deadline - loop.time()
            if claimed or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await woken.wait()
    return json_response({"commands": claimed})


@routes.post("/api/v1/bridge/commands/{command_id}/result")
@agent_only
@doc("Report a command's outcome, once (409 already_reported after)",
     request=CommandResultSchema, status=204)
async def post_command_result(request: web.Request) -> web.Response:
    org_id, agent_id = _agent(request)
    command_id = uuid_param(request, "command_id")
    result = await load_body(request, CommandResultSchema)
    async with org_tx(request) as tx:
        completion = await orders.complete(tx, org_id, agent_id, command_id, result)
        order = completion.order
        if order is None:
            if not completion.found:
                raise NotFound("No such command.")
            raise Conflict("This command's result was already reported.",
                           code="already_reported")
        action = (AuditAction.ORDER_EXECUTED if result["status"] == "filled"
                  else AuditAction.ORDER_REJECTED)
        await audit.record(tx, request, action, resource_type="order", resource_id=order.id,
                           details={"status": result["status"],
                                    "broker_ticket": result["broker_ticket"],
                                    "price": decimal_text(result["price"]),
                                    "message": result["message"]})
    return web.Response(status=204)
