"""The trading flows, read top to bottom, with no HTTP in them: placing an order,
closing a position, cancelling an order.

    place_order     lock the account -> a replay of the same client_order_id answers
                    the first order -> an agent to carry it -> the risk limits ->
                    the order and its entry; a refusal is audited in a transaction of
                    its own (the request fails, the refusal stays on record)
    close_position  lock the account -> the open position -> not already closing ->
                    a market order of its volume the other way (closing only reduces
                    exposure: no risk limit applies)
    cancel_order    only while no agent has it

The account row is locked while an order is checked and written, so orders on one
account are judged one at a time against what the ones before them left. The agent is
woken once the order is committed (`tx.after_commit`), never for one rolled back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from archomata import audit
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, TxOpener
from archomata.errors import Conflict, NotFound, ValidationFailed
from archomata.trading import risk
from archomata.trading.store import accounts, market, orders
from archomata.trading.values import with_decimal_texts

ORDER_FIELDS = ("symbol", "side", "type", "volume", "price", "sl", "tp")
OPPOSITE = {"buy": "sell", "sell": "buy"}
Wake = Callable[[UUID], Awaitable[None]]  # tells an agent's long poll a command waits


@dataclass(frozen=True, slots=True)
class Placed:
    order: orders.Order
    replayed: bool  # the order an earlier request with the same client_order_id made


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


def _wake_after_commit(tx: Tx, wake: Wake, agent_id: UUID) -> None:
    async def woken() -> None:
        await wake(agent_id)

    tx.after_commit(woken)


async def place_order(door: TxOpener, who: AuditContext, wake: Wake, org_id: UUID,
                      user_id: UUID | None, account_id: UUID,
                      draft: dict[str, Any]) -> Placed:
    """The order `draft` on the account, or its replay; 422 risk_limit_exceeded, audited,
    when a limit would be breached."""
    async with door() as tx:
        assigned, limits = await _lock_account(tx, org_id, account_id)
        first = await _replay(tx, org_id, account_id, draft)
        if first is not None:
            return Placed(first, replayed=True)
        agent_id = _carrier(assigned)
        exposure = await market.exposure(tx, org_id, account_id)
        breach = risk.check(limits, exposure, draft["volume"])
        if breach is None:
            order = await orders.insert(tx, org_id, account_id, draft, user_id, "place_order")
            await audit.record(tx, who, AuditAction.ORDER_CREATED, resource_type="order",
                               resource_id=order.id, details=_summary(draft))
            _wake_after_commit(tx, wake, agent_id)
            return Placed(order, replayed=False)
    async with door() as tx:
        await audit.record(tx, who, AuditAction.ORDER_REJECTED, resource_type="account",
                           resource_id=account_id,
                           details={"limit": breach.limit.value, "reason": breach.message,
                                    "order": _summary(draft)})
    raise ValidationFailed(breach.message, code="risk_limit_exceeded",
                           errors={breach.limit.value: [breach.message]})


async def close_position(tx: Tx, who: AuditContext, wake: Wake, org_id: UUID,
                         user_id: UUID | None, account_id: UUID,
                         ticket: int) -> orders.Order:
    """A market order closing the open position `ticket`; 409 position_closing while a
    close of it is pending, sent, or filled and not yet reflected by a state push."""
    agent_id = _carrier((await _lock_account(tx, org_id, account_id))[0])
    position = await market.get_position(tx, org_id, account_id, ticket)
    if position is None:
        raise NotFound("No such open position.")
    if await orders.closing(tx, org_id, account_id, ticket):
        raise Conflict("This position is already being closed.", code="position_closing")
    draft = {"symbol": position.symbol, "side": OPPOSITE[position.side], "type": "market",
             "volume": position.volume, "position_ticket": ticket}
    order = await orders.insert(tx, org_id, account_id, draft, user_id, "close_position")
    await audit.record(tx, who, AuditAction.ORDER_CREATED, resource_type="order",
                       resource_id=order.id,
                       details={**_summary(draft), "position_ticket": ticket})
    _wake_after_commit(tx, wake, agent_id)
    return order


async def cancel_order(tx: Tx, who: AuditContext, org_id: UUID,
                       order_id: UUID) -> orders.Order:
    """The order, cancelled; 409 order_not_pending once an agent has it or it is done."""
    order = await orders.cancel(tx, org_id, order_id)
    if order is None:
        if await orders.get(tx, org_id, order_id) is None:
            raise NotFound("No such order.")
        raise Conflict("The order is no longer pending: an agent has it, or it is done.",
                       code="order_not_pending")
    await audit.record(tx, who, AuditAction.ORDER_CANCELLED, resource_type="order",
                       resource_id=order_id)
    return order
