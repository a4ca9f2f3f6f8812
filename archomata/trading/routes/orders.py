"""Orders: placed by people, checked against the account's risk limits, carried to the
account's agent as commands, cancelled while no agent has them (the flows:
archomata.trading.service)."""

from __future__ import annotations

import functools

from aiohttp import web

from archomata import audit, keys
from archomata.access import caller
from archomata.access.guards import require_permission, require_write
from archomata.access.permissions import Permission
from archomata.db import org_tx
from archomata.errors import NotFound
from archomata.trading import service
from archomata.trading.schemas import (
    OrderDraftSchema,
    OrderListSchema,
    OrderQuerySchema,
    OrderSchema,
)
from archomata.trading.store import orders
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after, int_param, uuid_param

routes = web.RouteTableDef()


@routes.post("/api/v1/accounts/{account_id}/orders")
@require_permission(Permission.ORDERS_CREATE)
@require_write
@doc("Place an order: checked against the risk limits (422 risk_limit_exceeded), then "
     "sent to the account's agent. A retry with the same client_order_id answers 200 with "
     "the first order.", request=OrderDraftSchema, response=OrderSchema, status=201)
async def place_order(request: web.Request) -> web.Response:
    acting = caller.member(request)
    org_id = acting.org_id
    account_id = uuid_param(request, "account_id")
    draft = await load_body(request, OrderDraftSchema)
    placed = await service.place_order(
        functools.partial(org_tx, request), audit.context_of(request),
        request.app[keys.BROADCAST].wake, org_id, acting.user_id, account_id, draft)
    if placed.replayed:
        return json_response(placed.order, headers={"Idempotent-Replayed": "true"})
    return json_response(placed.order, status=201,
                         location=f"/api/v1/orders/{placed.order.id}")


@routes.post("/api/v1/accounts/{account_id}/positions/{ticket}/close")
@require_permission(Permission.ORDERS_CREATE)
@require_write
@doc("Close an open position with a market order of its volume (closing only reduces "
     "exposure, so no risk limit applies). 409 position_closing while a close of it is "
     "pending, sent, or filled and not yet reflected by a state push",
     response=OrderSchema, status=201)
async def close_position(request: web.Request) -> web.Response:
    acting = caller.member(request)
    org_id = acting.org_id
    account_id = uuid_param(request, "account_id")
    ticket = int_param(request, "ticket")
    async with org_tx(request) as tx:
        order = await service.close_position(
            tx, audit.context_of(request), request.app[keys.BROADCAST].wake, org_id,
            acting.user_id, account_id, ticket)
    return json_response(order, status=201, location=f"/api/v1/orders/{order.id}")


@routes.get("/api/v1/orders")
@require_permission(Permission.ORDERS_READ)
@doc("The org's orders, newest first", query=OrderQuerySchema, response=OrderListSchema)
async def list_orders(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    page, filters = page_of(request, OrderQuerySchema)
    async with org_tx(request) as tx:
        found = await orders.list_page(tx, org_id, filters, after(page), page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.get("/api/v1/orders/{order_id}")
@require_permission(Permission.ORDERS_READ)
@doc("One order", response=OrderSchema)
async def get_order(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        order = await orders.get(tx, org_id, uuid_param(request, "order_id"))
    if order is None:
        raise NotFound("No such order.")
    return json_response(order)


@routes.post("/api/v1/orders/{order_id}/cancel")
@require_permission(Permission.ORDERS_CANCEL)
@require_write
@doc("Cancel an order no agent has yet (409 order_not_pending after)", response=OrderSchema)
async def cancel_order(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    order_id = uuid_param(request, "order_id")
    async with org_tx(request) as tx:
        order = await service.cancel_order(tx, audit.context_of(request), org_id, order_id)
    return json_response(order)
