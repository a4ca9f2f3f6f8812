"""/me/identities: the Google and Azure AD identities linked to the caller, and
unlinking one while another way to sign in remains."""

from __future__ import annotations

from uuid import UUID

from aiohttp import web

from archomata import audit
from archomata.access import caller
from archomata.access.guards import authenticated
from archomata.audit import AuditAction
from archomata.errors import Conflict, NotFound
from archomata.identity.schemas.sso import IdentityListSchema
from archomata.identity.store import identities
from archomata.identity.store.identities import Identity
from archomata.web.json_io import json_response
from archomata.web.openapi import doc

routes = web.RouteTableDef()


def _body(identity: Identity) -> dict[str, object]:
    return {"id": identity.id, "provider": identity.provider, "email": identity.email,
            "linked_at": identity.linked_at}


@routes.get("/api/v1/me/identities")
@authenticated
@doc("The caller's linked sign-in identities (Google, Azure AD)", response=IdentityListSchema)
async def list_identities(request: web.Request) -> web.Response:
    me = caller.person(request)
    async with me.tx() as tx:
        linked = await identities.list_for_user(tx, me.user_id)
    return json_response({"items": [_body(i) for i in linked]})


@routes.delete("/api/v1/me/identities/{identity_id}")
@authenticated
@doc("Unlink one of the caller's identities; 409 `last_sign_in_method` when neither a "
     "password nor another identity would remain", status=204)
async def delete_identity(request: web.Request) -> web.Response:
    me = caller.person(request)
    try:
        identity_id = UUID(request.match_info["identity_id"])
    except ValueError:
        raise NotFound("No such identity.") from None
    user_id = me.user_id
    async with me.tx() as tx:
        methods = await identities.lock_sign_in_methods(tx, user_id)
        identity = await identities.delete(tx, identity_id, user_id)
        if identity is None:
            raise NotFound("No such identity.")
        if not methods.has_password and methods.identities <= 1:
            raise Conflict("This is your last way to sign in: set a password or link "
                           "another identity first.", code="last_sign_in_method")
        # No `auth.sso.unlinked` action exists yet: the change to the user is recorded
        # as such, naming what changed.
        await audit.record(tx, audit.context_of(request), AuditAction.USER_UPDATED,
                           resource_type="user_identity",
                           resource_id=identity.id,
                           details={"change": "sso_identity_unlinked",
                                    "provider": identity.provider})
    return web.Response(status=204)
