"""/strategies: named parameter sets (a bounded JSON object) and the accounts they trade."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from archomata import audit
from archomata.access import caller
from archomata.access.guards import require_permission, require_write
from archomata.access.permissions import Permission
from archomata.audit import AuditAction
from archomata.db import Tx, org_tx
from archomata.errors import NotFound, ValidationFailed
from archomata.trading.schemas import (
    StrategyCreateSchema,
    StrategyListSchema,
    StrategyPatchSchema,
    StrategySchema,
)
from archomata.trading.store import strategies
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after, uuid_param

routes = web.RouteTableDef()


async def _check_accounts(tx: Tx, org_id: UUID, account_ids: list[UUID] | None) -> None:
    if account_ids and not await strategies.accounts_exist(tx, org_id, account_ids):
        raise ValidationFailed("No such account.", errors={"account_ids": ["No such account."]})


@routes.get("/api/v1/strategies")
@require_permission(Permission.STRATEGIES_READ)
@doc("The org's strategies, newest first", response=StrategyListSchema)
async def list_strategies(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    page, _ = page_of(request)
    async with org_tx(request) as tx:
        found = await strategies.list_page(tx, org_id, after(page), page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.get("/api/v1/strategies/{strategy_id}")
@require_permission(Permission.STRATEGIES_READ)
@doc("One strategy", response=StrategySchema)
async def get_strategy(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        strategy = await strategies.get(tx, org_id, uuid_param(request, "strategy_id"))
    if strategy is None:
        raise NotFound("No such strategy.")
    return json_response(strategy)


@routes.post("/api/v1/strategies")
@require_permission(Permission.STRATEGIES_CREATE)
@require_write
@doc("Create a strategy", request=StrategyCreateSchema, response=StrategySchema, status=201)
async def create_strategy(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    body = await load_body(request, StrategyCreateSchema)
    async with org_tx(request) as tx:  # a name taken is the db's 409 name_taken
        await _check_accounts(tx, org_id, body["account_ids"])
        strategy = await strategies.insert(tx, org_id, body)
        await audit.record(tx, audit.context_of(request), AuditAction.STRATEGY_CREATED,
                           resource_type="strategy", resource_id=strategy.id,
                           details={"name": strategy.name, "enabled": strategy.enabled})
    return json_response(strategy, status=201,
                         location=f"/api/v1/strategies/{strategy.id}")


@routes.patch("/api/v1/strategies/{strategy_id}")
@require_permission(Permission.STRATEGIES_UPDATE)
@require_write
@doc("Change a strategy", request=StrategyPatchSchema, response=StrategySchema)
async def update_strategy(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    strategy_id = uuid_param(request, "strategy_id")
    body = await load_body(request, StrategyPatchSchema)
    if not body:
        raise ValidationFailed("Nothing to change.", errors={"_body": ["Give a field."]})
    async with org_tx(request) as tx:  # a name taken is the db's 409 name_taken
        await _check_accounts(tx, org_id, body.get("account_ids"))
        strategy = await strategies.update(tx, org_id, strategy_id, body)
        if strategy is None:
            raise NotFound("No such strategy.")
        await audit.record(tx, audit.context_of(request), AuditAction.STRATEGY_UPDATED,
                           resource_type="strategy", resource_id=strategy_id,
                           details={"fields": sorted(body)})
    return json_response(strategy)


@routes.delete("/api/v1/strategies/{strategy_id}")
@require_permission(Permission.STRATEGIES_DELETE)
@require_write
@doc("Delete a strategy", status=204)
async def delete_strategy(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    strategy_id = uuid_param(request, "strategy_id")
    async with org_tx(request) as tx:
        if not await strategies.delete(tx, org_id, strategy_id):
            raise NotFound("No such strategy.")
        await audit.record(tx, audit.context_of(request), AuditAction.STRATEGY_DELETED,
                           resource_type="strategy",
                           resource_id=strategy_id)
    return web.Response(status=204)
