"""Platform administration: every org and user, disabling and enabling them."""

from __future__ import annotations

from aiohttp import web
from marshmallow import Schema, fields, validate

from archomata import audit, keys
from archomata.access import caller
from archomata.access.guards import require_platform_admin
from archomata.access.principal import PlatformRole
from archomata.access.step_up import step_up
from archomata.audit import AuditAction
from archomata.db import platform_tx
from archomata.errors import NotFound, ValidationFailed
from archomata.identity.revocation import REVOCATION
from archomata.identity.store import users
from archomata.identity.web import user_body
from archomata.orgs.invitation_revocation import revoke_with_inviter
from archomata.orgs.store import orgs
from archomata.orgs.store.invitations import RevokeReason
from archomata.web.json_io import json_response, load_body, uuid_param
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.schemas import OrgSchema, UserSchema
from archomata.web.text import Text

routes = web.RouteTableDef()


class OrgListSchema(Schema):
    items = fields.List(fields.Nested(OrgSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class UserListSchema(Schema):
    items = fields.List(fields.Nested(UserSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class UserPatchSchema(Schema):
    platform_role = Text(validate=validate.OneOf([r.value for r in PlatformRole]))
    disabled = fields.Boolean()


@routes.get("/api/v1/admin/orgs")
@require_platform_admin
@doc("Every org, newest first", response=OrgListSchema)
async def list_orgs(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    async with platform_tx(request) as tx:
        found = await orgs.list_page(tx, (page.after.at, page.after.id) if page.after else None,
                                     page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.get("/api/v1/admin/users")
@require_platform_admin
@doc("Every user, newest first", response=UserListSchema)
async def list_users(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    async with platform_tx(request) as tx:
        found = await users.list_page(tx, (page.after.at, page.after.id) if page.after else None,
                                      page.limit + 1)
    return json_response(listing([user_body(u) for u in found], len(found), page))


async def _set_org_disabled(request: web.Request, disabled: bool) -> web.Response:
    org_id = uuid_param(request, "org_id")
    revocation = request.app[REVOCATION]
    async with platform_tx(request) as tx:
        if await orgs.get(tx, org_id) is None:
            raise NotFound("No such organisation.")
        # The entry first: the database changes the column only once it is written.
        await audit.record(tx, audit.context_of(request), AuditAction.ORG_DISABLED if disabled
                           else AuditAction.ORG_ENABLED, resource_type="org",
                           resource_id=org_id, org_id=org_id)
        org = await orgs.set_disabled(tx, org_id, disabled)
        assert org is not None  # the row was there in this transaction
        if disabled:
            # Restrictive changes reach Redis before the commit: if the commit fails the
            # org is refused for a moment too long, never accepted a moment too long.
            await revocation.set_org_disabled(org_id, True)
    if not disabled:
        await revocation.set_org_disabled(org_id, False)
    return json_response(org)


@routes.post("/api/v1/admin/orgs/{org_id}/disable")
@require_platform_admin
@step_up
@doc("Disable an org: its tokens, sessions and agent keys stop at once", response=OrgSchema)
async def disable_org(request: web.Request) -> web.Response:
    return await _set_org_disabled(request, True)


@routes.post("/api/v1/admin/orgs/{org_id}/enable")
@require_platform_admin
@step_up
@doc("Enable a disabled org", response=OrgSchema)
async def enable_org(request: web.Request) -> web.Response:
    return await _set_org_disabled(request, False)


@routes.patch("/api/v1/admin/users/{user_id}")
@require_platform_admin
@step_up
@doc("Change a user's platform role or disable them", request=UserPatchSchema,
     response=UserSchema)
async def update_user(request: web.Request) -> web.Response:
    user_id = uuid_param(request, "user_id")
    body = await load_body(request, UserPatchSchema)
    if not body:
        raise ValidationFailed("Nothing to change.", errors={"_body": ["Give a field."]})
    role = PlatformRole(body["platform_role"]) if "platform_role" in body else None
    app = request.app
    async with platform_tx(request) as tx:
        before = await users.get(tx, user_id)
        if before is None:
            raise NotFound("No such user.")
        wanted = {"platform_role": role or before.platform_role,
                  "disabled": body.get("disabled", before.disabled)}
        changes = {k: {"from": getattr(before, k), "to": v}
                   for k, v in wanted.items() if getattr(before, k) != v}
        # The entry first: the database changes these columns only once it is written.
        await audit.record(tx, audit.context_of(request), AuditAction.USER_UPDATED,
                           resource_type="user",
                           resource_id=user_id, details={"changes": changes})
        user = await users.update_admin_fields(tx, user_id, role, body.get("disabled"))
        assert user is not None
        if user.disabled and not before.disabled:
            # An account disabled, as one taken over, keeps none of its invitations
            # (enabling it again does not bring them back).
            admin = caller.person(request)
            await revoke_with_inviter(tx, audit.context_of(request), None, user_id, admin.user_id,
                                      RevokeReason.INVITER_DISABLED)
        if user.disabled:
            await app[REVOCATION].set_user_disabled(user_id, True)
            await app[keys.SESSIONS].revoke_user(tx, user_id)
        if "platform_role" in changes:
            # Tokens carry the platform role: those minted so far die, and the next refresh
            # mints from the row this transaction leaves (it waits for it).
            cut = await app[keys.SESSIONS].cut_off(tx, user_id, end_sessions=False)
            await users.set_tokens_valid_after(tx, user_id, cut)
    if not user.disabled:
        await app[REVOCATION].set_user_disabled(user_id, False)
    return json_response(user_body(user))
