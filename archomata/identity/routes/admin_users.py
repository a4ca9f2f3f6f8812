"""Platform administration of the users: every user, their platform role, disabling and
enabling them (the flow: archomata.identity.user_admin; the orgs':
archomata.orgs.routes.admin)."""

from __future__ import annotations

import functools

from aiohttp import web
from marshmallow import Schema, fields, validate

from archomata import audit, keys
from archomata.access import caller
from archomata.access.guards import require_platform_admin
from archomata.access.principal import PlatformRole
from archomata.access.step_up import step_up
from archomata.db import platform_tx
from archomata.errors import ValidationFailed
from archomata.identity import user_admin
from archomata.identity.revocation import REVOCATION
from archomata.identity.store import users
from archomata.identity.web import user_body
from archomata.web.json_io import json_response, load_body, uuid_param
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after
from archomata.web.schemas import UserSchema
from archomata.web.text import Text

routes = web.RouteTableDef()

# What an account disabled loses outside identity (its open invitations), as create_app
# hands it in: identity imports no package above it.
ON_DISABLED: web.AppKey[user_admin.OnDisabled] = web.AppKey("on_user_disabled")


class UserListSchema(Schema):
    items = fields.List(fields.Nested(UserSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class UserPatchSchema(Schema):
    platform_role = Text(validate=validate.OneOf([r.value for r in PlatformRole]))
    disabled = fields.Boolean()


@routes.get("/api/v1/admin/users")
@require_platform_admin
@doc("Every user, newest first", response=UserListSchema)
async def list_users(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    async with platform_tx(request) as tx:
        found = await users.list_page(tx, after(page),
                                      page.limit + 1)
    return json_response(listing([user_body(u) for u in found], len(found), page))


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
    admin = caller.person(request)
    keepers = user_admin.Keepers(app[REVOCATION], app[keys.SESSIONS], app[ON_DISABLED])
    user = await user_admin.update_user(
        functools.partial(platform_tx, request), audit.context_of(request), keepers,
        admin.user_id, user_id, user_admin.UserChange(role, body.get("disabled")))
    return json_response(user_body(user))
