"""/accounts: MT5 accounts, their positions and deals, and their risk limits.

Credentials are write-only: sealed with AES-256-GCM before they reach SQL, answered only
as `has_credentials`, and opened for nobody but the agent the account is assigned to;
who may put them within that agent's reach is archomata.trading.custody's rule.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit, keys
from archomata.access import caller
from archomata.access.guards import require_permission, require_write
from archomata.access.permissions import Permission
from archomata.access.step_up import (
    step_up,
    step_up_custody,
    step_up_exempt,
    step_up_is_stale,
    step_up_refusal,
)
from archomata.audit import AuditAction
from archomata.db import Tx, org_tx
from archomata.errors import Conflict, NotFound, ValidationFailed
from archomata.trading import credentials, custody
from archomata.trading.risk import RiskLimits
from archomata.trading.schemas import (
    AccountCreateSchema,
    AccountListSchema,
    AccountPatchSchema,
    AccountSchema,
    DealListSchema,
    HistoryQuerySchema,
    PositionListSchema,
    RiskLimitsSchema,
)
from archomata.trading.store import accounts, market
from archomata.trading.values import with_decimal_texts
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after, uuid_param

routes = web.RouteTableDef()
# The fields a change of custody can come through (archomata.trading.custody).
CUSTODY_FIELDS = frozenset({"credentials", "agent_id", "broker", "server"})


async def _lock_agent(tx: Tx, org_id: UUID, agent_id: UUID | None) -> None:
    """The agent an account is to be assigned to, locked (shared) so that no rotation of
    its key decides at the same time (archomata.trading.custody)."""
    if agent_id is not None and not await custody.lock_agent(tx, org_id, agent_id, for_key=False):
        raise ValidationFailed("No such agent.", errors={"agent_id": ["No such agent."]})


async def _guard_handover(tx: Tx, acting: caller.Member, before: custody.Holding | None,
                          after: custody.Holding, credentials_named: bool,
                          credentials_set: bool, stale: bool) -> None:
    """On the locked rows, before anything is written: a custody change by a caller whose
    second factor is stale is refused (403 step_up_required), and a hand-over by someone
    other than the org administrator (403 permission_denied)."""
    if stale and custody.changes_custody(before, after, credentials_named):
        raise step_up_refusal()
    if custody.hands_over(before, after, credentials_set):
        await custody.require_administrator(
            tx, acting, "Giving an agent an account with credentials")


async def _lock_for_change(tx: Tx, org_id: UUID, account_id: UUID, body: dict[str, Any],
                           credentials_set: bool) -> custody.Holding:
    """Locks the agent the account will have, when the change could hand it credentials,
    then the account. Agent first, account second: the order in which deleting an agent
    unassigns its accounts, so the two never deadlock. Setting credentials alone names no
    agent: the account's is read, locked, and checked unchanged once the account is."""
    for _ in range(3):
        target: UUID | None = None
        if "agent_id" in body:
            target = body["agent_id"]
            await _lock_agent(tx, org_id, target)
        elif credentials_set:
            target = await accounts.agent_of(tx, org_id, account_id)
            if target is not None and not await custody.lock_agent(tx, org_id, target,
                                                                    for_key=False):
                continue  # deleted meanwhile: the account is unassigned now
        before = await accounts.lock_holding(tx, org_id, account_id)
        if before is None:
            raise NotFound("No such account.")
        if "agent_id" in body or not credentials_set or before.agent_id == target:
            return before
    raise Conflict("The account is being changed by another request; retry.")


def _sealed(request: web.Request, account_id: UUID, secret: dict[str, Any] | None) -> bytes | None:
    if secret is None:
        return None
    return credentials.seal(request.app[keys.DATA_KEYS], account_id, secret)



async def _account_or_404(tx: Tx, org_id: UUID, account_id: UUID) -> accounts.Account:
    account = await accounts.get(tx, org_id, account_id)
    if account is None:
        raise NotFound("No such account.")
    return account


@routes.get("/api/v1/accounts")
@require_permission(Permission.ACCOUNTS_READ)
@doc("The org's accounts, newest first", response=AccountListSchema)
async def list_accounts(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    page, _ = page_of(request)
    async with org_tx(request) as tx:
        found = await accounts.list_page(tx, org_id, after(page), page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.get("/api/v1/accounts/{account_id}")
@require_permission(Permission.ACCOUNTS_READ)
@doc("One account", response=AccountSchema)
async def get_account(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        account = await _account_or_404(tx, org_id, uuid_param(request, "account_id"))
    return json_response(account)


@routes.post("/api/v1/accounts")
@require_permission(Permission.ACCOUNTS_CREATE)
@require_write
@step_up_custody
@doc("Add an account (trading enabled, no other risk limit). With `agent_id` or "
     "`credentials`, a recent second factor (403 step_up_required); with both, the org "
     "administrator only (403 permission_denied)",
     request=AccountCreateSchema, response=AccountSchema, status=201)
async def create_account(request: web.Request) -> web.Response:
    acting = caller.member(request)
    org_id = acting.org_id
    body = await load_body(request, AccountCreateSchema)
    stale = (body["credentials"] is not None or body["agent_id"] is not None) \
        and await step_up_is_stale(request)
    account_id = uuid.uuid4()
    body["credentials"] = _sealed(request, account_id, body["credentials"])
    after = custody.Holding(body["agent_id"], body["credentials"] is not None,
                            (body["broker"], body["server"]))
    async with org_tx(request) as tx:
        await _lock_agent(tx, org_id, body["agent_id"])
        await _guard_handover(tx, acting, None, after, after.has_credentials,
                              after.has_credentials, stale)
        account = await accounts.insert(tx, account_id, org_id, body)
        await audit.record(tx, audit.context_of(request), AuditAction.ACCOUNT_CREATED,
                           resource_type="account", resource_id=account.id,
                           details={"name": account.name, "login": account.login,
                                    "environment": account.environment,
                                    "agent_id": account.agent_id and str(account.agent_id)})
    return json_response(account, status=201, location=f"/api/v1/accounts/{account.id}")


@routes.patch("/api/v1/accounts/{account_id}")
@require_permission(Permission.ACCOUNTS_UPDATE)
@require_write
@step_up_custody
@doc("Change an account; `credentials: null` removes them. A change of custody "
     "(credentials, the agent, or the broker or server of an account with credentials) "
     "needs a recent second factor (403 step_up_required). Pointing an account with "
     "credentials at another agent, setting credentials on an account with an agent, or "
     "changing the broker or server of an assigned account with credentials: the org "
     "administrator only (403 permission_denied)", request=AccountPatchSchema,
     response=AccountSchema)
async def update_account(request: web.Request) -> web.Response:
    acting = caller.member(request)
    org_id = acting.org_id
    account_id = uuid_param(request, "account_id")
    body = await load_body(request, AccountPatchSchema)
    if not body:
        raise ValidationFailed("Nothing to change.", errors={"_body": ["Give a field."]})
    # Asked before the transaction (it may read), judged inside it on the locked account:
    # a rename or a limit-free field changes no custody and never asks.
    stale = not CUSTODY_FIELDS.isdisjoint(body) and await step_up_is_stale(request)
    if "credentials" in body:
        body["credentials"] = _sealed(request, account_id, body["credentials"])
    credentials_set = body.get("credentials") is not None
    async with org_tx(request) as tx:
        before = await _lock_for_change(tx, org_id, account_id, body, credentials_set)
        after = custody.Holding(
            body.get("agent_id", before.agent_id),
            credentials_set if "credentials" in body else before.has_credentials,
            (body.get("broker", before.destination[0]),
             body.get("server", before.destination[1])))
        await _guard_handover(tx, acting, before, after, "credentials" in body,
                              credentials_set, stale)
        account = await accounts.update(tx, org_id, account_id, body)
        if account is None:
            raise NotFound("No such account.")
        await audit.record(tx, audit.context_of(request), AuditAction.ACCOUNT_UPDATED,
                           resource_type="account", resource_id=account_id,
                           details={"fields": sorted(body)})
    return json_response(account)


@routes.delete("/api/v1/accounts/{account_id}")
@require_permission(Permission.ACCOUNTS_DELETE)
@require_write
@step_up_exempt("deleting an account hands nothing out")
@doc("Delete an account (its orders and deals stay on record; pending orders are cancelled)",
     status=204)
async def delete_account(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    account_id = uuid_param(request, "account_id")
    async with org_tx(request) as tx:
        if not await accounts.soft_delete(tx, org_id, account_id):
            raise NotFound("No such account.")
        await audit.record(tx, audit.context_of(request), AuditAction.ACCOUNT_DELETED,
                           resource_type="account",
                           resource_id=account_id)
    return web.Response(status=204)


@routes.get("/api/v1/accounts/{account_id}/positions")
@require_permission(Permission.POSITIONS_READ)
@doc("Open positions as the agent last reported them, newest first (`from`/`to` on "
     "opened_at)", query=HistoryQuerySchema, response=PositionListSchema)
async def list_positions(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    account_id = uuid_param(request, "account_id")
    page, filters = page_of(request, HistoryQuerySchema)
    async with org_tx(request) as tx:
        await _account_or_404(tx, org_id, account_id)
        found = await market.list_positions(tx, org_id, account_id, filters, after(page),
                                            page.limit + 1)
    return json_response(listing(found, len(found), page, key="opened_at"))


@routes.get("/api/v1/accounts/{account_id}/deals")
@require_permission(Permission.DEALS_READ)
@doc("Deals, newest first (`from` inclusive, `to` exclusive, on executed_at)",
     query=HistoryQuerySchema, response=DealListSchema)
async def list_deals(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    account_id = uuid_param(request, "account_id")
    page, filters = page_of(request, HistoryQuerySchema)
    async with org_tx(request) as tx:
        await _account_or_404(tx, org_id, account_id)
        found = await market.list_deals(tx, org_id, account_id, filters, after(page),
                                        page.limit + 1)
    return json_response(listing(found, len(found), page, key="executed_at"))


@routes.get("/api/v1/accounts/{account_id}/risk-limits")
@require_permission(Permission.RISK_LIMITS_READ)
@doc("The account's risk limits (null: no limit)", response=RiskLimitsSchema)
async def get_risk_limits(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        limits = await accounts.get_limits(tx, org_id, uuid_param(request, "account_id"))
    if limits is None:
        raise NotFound("No such account.")
    return json_response(limits)


@routes.put("/api/v1/accounts/{account_id}/risk-limits")
@require_permission(Permission.RISK_LIMITS_UPDATE)
@require_write
@step_up
@doc("Set every risk limit of the account (null: no limit)", request=RiskLimitsSchema,
     response=RiskLimitsSchema)
async def put_risk_limits(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    account_id = uuid_param(request, "account_id")
    wanted = RiskLimits(**await load_body(request, RiskLimitsSchema))
    async with org_tx(request) as tx:
        before = await accounts.get_limits(tx, org_id, account_id)
        limits = await accounts.set_limits(tx, org_id, account_id, wanted)
        if before is None or limits is None:
            raise NotFound("No such account.")
        await audit.record(tx, audit.context_of(request), AuditAction.RISK_LIMITS_UPDATED,
                           resource_type="account", resource_id=account_id,
                           details={"from": with_decimal_texts(asdict(before)),
                                    "to": with_decimal_texts(asdict(limits))})
    return json_response(limits)
