"""GET /me: who the caller is, where, and what they may do."""

from __future__ import annotations

from aiohttp import web
from marshmallow import Schema, fields

from archomata.access import caller, roles
from archomata.access.guards import authenticated
from archomata.errors import Unauthorized
from archomata.identity.store import mfa, users
from archomata.identity.web import org_body, user_body
from archomata.tenancy import orgs
from archomata.web.json_io import json_response
from archomata.web.openapi import doc
from archomata.web.schemas import MemberOrgSchema, UserSchema

routes = web.RouteTableDef()


class RoleRefSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)


class MeUserSchema(UserSchema):
    mfa_enabled = fields.Boolean(required=True)


class MeSchema(Schema):
    user = fields.Nested(MeUserSchema, required=True)
    org = fields.Nested(MemberOrgSchema, allow_none=True, required=True)
    org_role = fields.String(allow_none=True, required=True)
    platform_role = fields.String(required=True)
    roles = fields.List(fields.Nested(RoleRefSchema), required=True)
    permissions = fields.List(fields.String(), required=True)
    orgs = fields.List(fields.Nested(MemberOrgSchema), required=True)


@routes.get("/api/v1/me")
@authenticated
@doc("The caller, their current org, roles and permissions", response=MeSchema)
async def get_me(request: web.Request) -> web.Response:
    me = caller.person(request)
    principal = me.principal
    async with me.tx() as tx:
        user = await users.get(tx, principal.actor_id)
        memberships = await orgs.memberships_of(tx, principal.actor_id)
        held = (await roles.of_member(tx, principal.org_id, principal.actor_id)
                if principal.org_id else [])
        mfa_enabled = await mfa.enabled(tx, principal.actor_id)
    if user is None:
        raise Unauthorized("This account no longer exists.", code="user_disabled")
    current = next((m for m in memberships if m.org.id == principal.org_id), None)
    return json_response(MeSchema().dump({
        "user": {**user_body(user), "mfa_enabled": mfa_enabled},
        "org": org_body(current),
        "org_role": principal.org_role.value if principal.org_role else None,
        "platform_role": user.platform_role.value,
        "roles": held,
        "permissions": sorted(principal.permissions),
        "orgs": [org_body(m) for m in memberships],
    }))

