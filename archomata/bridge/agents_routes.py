"""/agents: MT5 bridge agents and their API keys (shown once, stored as bcrypt hashes)."""

from __future__ import annotations

from aiohttp import web

from archomata import audit, keys
from archomata.access import caller
from archomata.access.guards import require_permission, require_write
from archomata.access.permissions import Permission
from archomata.access.step_up import step_up, step_up_exempt
from archomata.audit import AuditAction
from archomata.bridge import agents, api_keys
from archomata.bridge.api_keys import API_KEYS
from archomata.db import org_tx
from archomata.errors import NotFound
from archomata.trading import custody
from archomata.trading.schemas import (
    AgentCreatedSchema,
    AgentCreateSchema,
    AgentListSchema,
    AgentSchema,
    ApiKeySchema,
)
from archomata.trading.store import accounts
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after, uuid_param

routes = web.RouteTableDef()


async def _revoke(request: web.Request, key_id: str) -> None:
    # Before the commit, as restrictive changes go: if Redis cannot take the mark the
    # change rolls back (503); if the commit fails, the old key is refused a little
    # early, never accepted a little late.
    await request.app[API_KEYS].revoke(key_id)


@routes.get("/api/v1/agents")
@require_permission(Permission.AGENTS_READ)
@doc("The org's agents, newest first; `online` when seen within 60 s",
     response=AgentListSchema)
async def list_agents(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    page, _ = page_of(request)
    async with org_tx(request) as tx:
        found = await agents.list_page(tx, org_id, after(page), page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.get("/api/v1/agents/{agent_id}")
@require_permission(Permission.AGENTS_READ)
@doc("One agent", response=AgentSchema)
async def get_agent(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    agent_id = uuid_param(request, "agent_id")
    async with org_tx(request) as tx:
        agent = await agents.get(tx, org_id, agent_id)
    if agent is None:
        raise NotFound("No such agent.")
    return json_response(agent)


@routes.post("/api/v1/agents")
@require_permission(Permission.AGENTS_CREATE)
@require_write
@step_up
@doc("Create an agent; its API key is in this answer and never again",
     request=AgentCreateSchema, response=AgentCreatedSchema, status=201)
async def create_agent(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    body = await load_body(request, AgentCreateSchema)
    key_id, secret, api_key = api_keys.new_key()
    key_hash = await request.app[keys.PASSWORDS].hash(secret)
    async with org_tx(request) as tx:
        agent = await agents.insert(tx, org_id, body["name"], key_id, key_hash)
        await audit.record(tx, audit.context_of(request), AuditAction.AGENT_CREATED,
                           resource_type="agent",
                           resource_id=agent.id, details={"name": agent.name})
    return json_response({"agent": agent, "api_key": api_key}, status=201,
                         location=f"/api/v1/agents/{agent.id}")


@routes.post("/api/v1/agents/{agent_id}/rotate-key")
@require_permission(Permission.AGENTS_UPDATE)
@require_write
@step_up
@doc("Replace the agent's API key: the old one fails at once on every instance. For an "
     "agent that serves an account with credentials, the org administrator only (403 "
     "permission_denied): the new key can fetch them", response=ApiKeySchema)
async def rotate_agent_key(request: web.Request) -> web.Response:
    acting = caller.member(request)
    org_id = acting.org_id
    agent_id = uuid_param(request, "agent_id")
    key_id, secret, api_key = api_keys.new_key()
    key_hash = await request.app[keys.PASSWORDS].hash(secret)
    async with org_tx(request) as tx:
        if not await custody.lock_agent(tx, org_id, agent_id, for_key=True):
            raise NotFound("No such agent.")
        # Read after the lock: an assignment to this agent holds it until it commits.
        credentialed = await accounts.credentialed_for_agent(tx, org_id, agent_id)
        if credentialed:
            await custody.require_administrator(tx, acting, "Rotating this agent's key")
        rotated = await agents.rotate_key(tx, org_id, agent_id, key_id, key_hash)
        if rotated is None:
            raise NotFound("No such agent.")
        await audit.record(tx, audit.context_of(request), AuditAction.AGENT_KEY_ROTATED,
                           resource_type="agent",
                           resource_id=agent_id,
                           details={"name": rotated[1].name, "rotated_by": str(acting.user_id),
                                    "sensitive_accounts": credentialed})
        await _revoke(request, rotated[0])
    await request.app[keys.BROADCAST].key_revoked(rotated[0])
    return json_response({"api_key": api_key})


@routes.delete("/api/v1/agents/{agent_id}")
@require_permission(Permission.AGENTS_DELETE)
@require_write
@step_up_exempt("deleting an agent revokes its key")
@doc("Delete an agent: its key fails at once, its accounts become unassigned", status=204)
async def delete_agent(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    agent_id = uuid_param(request, "agent_id")
    async with org_tx(request) as tx:
        key_id = await agents.delete(tx, org_id, agent_id)
        if key_id is None:
            raise NotFound("No such agent.")
        await audit.record(tx, audit.context_of(request), AuditAction.AGENT_DELETED,
                           resource_type="agent",
                           resource_id=agent_id)
        await _revoke(request, key_id)
    await request.app[keys.BROADCAST].key_revoked(key_id)
    return web.Response(status=204)
