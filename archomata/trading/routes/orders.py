"""Orders: placed by people, checked against the account's risk limits, carried to the
account's agent as commands, cancelled while no agent has them.

The account row is locked while an order is checked and written, so orders on one
account are judged one at a time against what the ones before them left.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit, keys
from archomata.access.guards import require_permission, require_write
from archomata.access.permissions import Permission
from archomata.audit import AuditAction
from archomata.db import Tx, org_tx
from archomata.errors import Conflict, NotFound, ValidationFailed
from archomata.trading import risk
from archomata.trading.schemas import (
    OrderDraftSchema,
    OrderListSchema,
    OrderQuerySchema,
    OrderSchema,
)
from archomata.trading.store import accounts, market, orders
from archomata.trading.values import with_decimal_texts
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after, caller, int_param, uuid_param

routes = web.RouteTableDef()
ORDER_FIELDS = ("symbol", "side", "type", "volume", "price", "sl", "tp")
OPPOSITE = {"buy": "sell", "sell": "buy"}


def _summary(draft: dict[str, Any]) -> dict[str, Any]:
    """An order's terms for the audit log, decimals as strings."""
    return with_decimal_texts({k: v for k, v in draft.items()
                               if k in ORDER_FIELDS and v is not None})


async def _lock_account(tx: Tx, org_id: UUID,
                        account_id: UUID) -> tuple[UUID | None, risk.RiskLimits]:
    locked = await accounts.lock_for_order(tx, org_id, account_id)
    if locked is None:
        raise NotFound("No such account.")
    return locked


def _carrier(agent_id: UUID | None) -> UUID:
    if agent_id is None:
        raise Conflict("The account has no agent to carry the order.", code="no_agent")
    return agent_id


async def _replay(tx: Tx, org_id: UUID, account_id: UUID,
                  draft: dict[str, Any]) -> orders.Order | None:
    """The order an earlier request with the same client_order_id created, if any."""
    if draft["client_order_id"] is None:
        return None
    first = await orders.by_client_id(tx, org_id, account_id, draft["client_order_id"])
    if first is not None and any(getattr(first, k) != draft[k] for k in ORDER_FIELDS):
        raise Conflict("This client_order_id was used for a different order.",
                       code="client_order_id_reused")
    return first


async def _record_rejection(request: web.Request, account_id: UUID, draft: dict[str, Any],
                            breach: risk.Breach) -> None:
    # Its own transaction: the request fails, but the refusal stays on record.
    async with org_tx(request) as tx:
        await audit.record(tx, request, AuditAction.ORDER_REJECTED, resource_type="account",
                           resource_id=account_id,
                           details={"limit": breach.limit.value, "reason": breach.message,
                                    "order": _summary(draft)})


async def _created(request: web.Request, agent_id: UUID, order: orders.Order) -> web.Response:
    await request.app[keys.BROADCAST].wake(agent_id)
    return json_response(order, status=201)


@routes.post("/api/v1/accounts/{account_id}/orders")
@require_permission(Permission.ORDERS_CREATE)
@require_write
@doc("Place an order: checked against the risk limits (422 risk_limit_exceeded), then "
     "sent to the account's agent. A retry with the same client_order_id answers 200 with "
     "the first order.", request=OrderDraftSchema, response=OrderSchema, status=201)
async def place_order(request: web.Request) -> web.Response:
    org_id, principal = caller(request)
    account_id = uuid_param(request, "account_id")
    draft = await load_body(request, OrderDraftSchema)
    async with org_tx(request) as tx:
        assigned, limits = await _lock_account(tx, org_id, account_id)
        first = await _replay(tx, org_id, account_id, draft)
        if first is not None:
            return json_response(first, headers={"Idempotent-Replayed": "true"})
        agent_id = _carrier(assigned)
        exposure = await market.exposure(tx, org_id, account_id)
        breach = risk.check(limits, exposure, draft["volume"])
        if breach is None:
            order = await orders.insert(tx, org_id, account_id, draft, principal.user_id,
                                        "place_order")
            await audit.record(tx, request, AuditAction.ORDER_CREATED, resource_type="order",
                               resource_id=order.id, details=_summary(draft))
    if breach is not None:
        await _record_rejection(request, account_id, draft, breach)
        raise ValidationFailed(breach.message, code="risk_limit_exceeded",
                               errors={breach.limit.value: [breach.message]})
    return await _created(request, agent_id, order)


@routes.post("/api/v1/accounts/{account_id}/positions/{ticket}/close")
@require_permission(Permission.ORDERS_CREATE)
@require_write
@doc("Close an open position with a market order of its volume (closing only reduces "
     "exposure, so no risk limit applies). 409 position_closing while a close of it is "
     "pending, sent, or filled and not yet reflected by a state push",
     response=OrderSchema, status=201)
async def close_position(request: web.Request) -> web.Response:
    org_id, principal = caller(request)
    account_id = uuid_param(request, "account_id")
    ticket = int_param(request, "ticket")
    async with org_tx(request) as tx:
        agent_id = _carrier((await _lock_account(tx, org_id, account_id))[0])
        position = await market.get_position(tx, org_id, account_id, ticket)
        if position is None:
            raise NotFound("No such open position.")
        if await orders.closing(tx, org_id, account_id, ticket):
            raise Conflict("This position is already being closed.", code="position_closing")
        draft = {"symbol": position.symbol, "side": OPPOSITE[position.side], "type": "market",
                 "volume": position.volume, "position_ticket": ticket}
        order = await orders.insert(tx, org_id, account_id, draft, principal.user_id,
                                    "close_position")
        await audit.record(tx, request, AuditAction.ORDER_CREATED, resource_type="order",
                           resource_id=order.id,
                           details={**_summary(draft), "position_ticket": ticket})
    return await _created(request, agent_id, order)


@routes.get("/api/v1/orders")
@require_permission(Permission.ORDERS_READ)
@doc("The org's orders, newest first", query=OrderQuerySchema, response=OrderListSchema)
async def list_orders(request: web.Request) -> web.Response:
    org_id, _ = caller(request)
    page, filters = page_of(request, OrderQuerySchema)
    async with org_tx(request) as tx:
        found = await orders.list_page(tx, org_id, filters, after(page), page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.get("/api/v1/orders/{order_id}")
@require_permission(Permission.ORDERS_READ)
@doc("One order", response=OrderSchema)
async def get_order(request: web.Request) -> web.Response:
    org_id, _ = caller(request)
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
    org_id, _ = caller(request)
    order_id = uuid_param(request, "order_id")
    async with org_tx(request) as tx:
        order = await orders.cancel(tx, org_id, order_id)
        if order is None:
            if await orders.get(tx, org_id, order_id) is None:
                raise NotFound("No such order.")
            raise Conflict("The order is no longer pending: an agent has it, or it is done.",
                           code="order_not_pending")
        await audit.record(tx, request, AuditAction.ORDER_CANCELLED, resource_type="order",
                           resource_id=order_id)
    return json_response(order)
