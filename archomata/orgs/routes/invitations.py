"""POST /auth/accept-invitation: joining an org through a mailed invitation (the flow:
archomata.orgs.service)."""

from __future__ import annotations

from aiohttp import web

from archomata import keys
from archomata.access import caller
from archomata.access.guards import public
from archomata.identity.schemas.auth import LoginResultSchema
from archomata.identity.schemas.mfa import MfaRequiredSchema
from archomata.identity.signin import SecondFactorRequired, SignInRefused
from archomata.identity.web import mfa_required, problem, reception, signed_in, who
from archomata.orgs import service
from archomata.orgs.schemas import AcceptInvitationSchema
from archomata.web.json_io import load_body
from archomata.web.openapi import doc

routes = web.RouteTableDef()


@routes.post("/api/v1/auth/accept-invitation")
@public
@doc("Join an org with an invitation token; 400 invalid_token once it is used, expired "
     "or revoked, or its inviter is no longer an administrator of the org; 403 "
     "org_disabled while the org is disabled; someone with a second factor gets "
     "`{mfa_required, mfa_token, methods}` instead", request=AcceptInvitationSchema,
     response=(LoginResultSchema, MfaRequiredSchema))
async def accept_invitation(request: web.Request) -> web.Response:
    body = await load_body(request, AcceptInvitationSchema)
    principal = caller.caller_if_any(request)
    acceptance = service.Acceptance(body["token"],
                                    signed_in_user=principal.user_id if principal else None,
                                    password=body.get("password"), name=body.get("name"))
    try:
        opened = await service.accept_invitation(reception(request), who(request), acceptance)
    except SignInRefused as exc:
        raise problem(exc) from None
    if isinstance(opened, SecondFactorRequired):  # nothing joined until the code
        return mfa_required(opened)
    return signed_in(request.app[keys.CONFIG], opened)
