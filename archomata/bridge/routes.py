"""/bridge: what MT5 agents call with their API key (`X-API-Key`). The handlers parse and
answer; the flows, and what is audited, are in archomata.bridge.service.

An agent sees only the accounts assigned to it, named by login; anything else is 404.
Every query is scoped by org_tx to the agent's org and by the agent id in the SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from archomata import audit, keys, sealed
from archomata.access import caller
from archomata.access.guards import agent_only
from archomata.access.route_policy import TimeoutClass
from archomata.bridge import service
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
from archomata.metrics import METRICS
from archomata.web.json_io import json_response, load_body, load_valid
from archomata.web.openapi import doc
from archomata.web.params import client_gone, int_param, uuid_param

routes = web.RouteTableDef()


@routes.post("/api/v1/bridge/heartbeat")
@agent_only
@doc("Report that the agent is alive, and its version", request=HeartbeatSchema,
     response=HeartbeatResultSchema)
async def heartbeat(request: web.Request) -> web.Response:
    agent = caller.agent(request)
    body = await load_body(request, HeartbeatSchema)
    await service.heartbeat(agent, body["version"], body["terminals"])
    return json_response({"server_time": datetime.now(UTC)})


@routes.get("/api/v1/bridge/accounts")
@agent_only
@doc("The accounts assigned to this agent, with their credentials (audited)",
     response=BridgeAccountListSchema, problems=sealed.PROBLEMS)
async def list_bridge_accounts(request: web.Request) -> web.Response:
    items = await service.assigned_accounts(caller.agent(request), audit.context_of(request),
                                            request.app[keys.DATA_KEYS])
    return json_response({"items": items, "next_cursor": None})


@routes.put("/api/v1/bridge/accounts/{login}/state")
@agent_only
@doc("Report balances and the open positions, which replace the previous ones at once",
     request=AccountStateSchema, status=204)
async def put_account_state(request: web.Request) -> web.Response:
    agent = caller.agent(request)
    login = int_param(request, "login")
    await service.push_state(agent, login, await load_body(request, AccountStateSchema))
    return web.Response(status=204)


@routes.post("/api/v1/bridge/accounts/{login}/deals")
@agent_only
@doc("Report deals (at most 1000); deals already known by ticket are counted as "
     "duplicates", request=DealBatchSchema, response=DealBatchResultSchema)
async def post_deals(request: web.Request) -> web.Response:
    agent = caller.agent(request)
    login = int_param(request, "login")
    columns = (await load_body(request, DealBatchSchema))["deals"]
    deals = await service.push_deals(agent, login, columns)
    return json_response({"inserted": deals.inserted, "duplicates": deals.duplicates})


@routes.get("/api/v1/bridge/commands")
@agent_only(timeout=TimeoutClass.LONG_POLL)
@doc("Commands for this agent's accounts, each leased to this poll; with `wait`, holds the "
     "request up to that many seconds until one arrives. A command with no result when "
     "its lease ends is handed out again (same id, attempt + 1). An agent holds at most 4 "
     "waiting polls: a fifth answers the oldest with no commands; an order wakes one.",
     query=CommandsQuerySchema, response=CommandListSchema)
async def poll_commands(request: web.Request) -> web.Response:
    agent = caller.agent(request)
    wait = load_valid(CommandsQuerySchema, dict(request.query), query=True)["wait"]
    stopping = request.app[keys.STOPPING]
    claimed = await service.poll(agent, request.app[keys.BROADCAST], wait,
                                 request.app[keys.CONFIG].command_lease_seconds,
                                 lambda: stopping.is_set() or client_gone(request))
    metrics = request.app[METRICS]
    metrics.commands_leased.inc(len(claimed))
    metrics.leases_expired.inc(sum(command.attempt > 1 for command in claimed))
    return json_response({"commands": claimed})


@routes.post("/api/v1/bridge/commands/{command_id}/result")
@agent_only
@doc("Report a command's outcome, from any attempt, once (409 already_reported after)",
     request=CommandResultSchema, status=204)
async def post_command_result(request: web.Request) -> web.Response:
    agent = caller.agent(request)
    command_id = uuid_param(request, "command_id")
    result = await load_body(request, CommandResultSchema)
    await service.report_result(agent, audit.context_of(request), command_id, result)
    return web.Response(status=204)
