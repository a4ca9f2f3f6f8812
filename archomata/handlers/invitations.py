"""POST /auth/accept-invitation: joining an org through a mailed invitation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archomata import audit, keys
from archomata.audit import AuditAction
from archomata.db import Tx, service_tx
from archomata.errors import BadRequest, Conflict, Unauthorized, ValidationFailed
from archomata.guards import public
from archomata.handlers.auth import start_session
from archomata.identity import password_proves
from archomata.openapi import doc
from archomata.schemas.auth import LoginResultSchema
from archomata.schemas.org import AcceptInvitationSchema
from archomata.security.passwords import MAX_LENGTH, MIN_LENGTH
from archomata.store import groups, invitations, members, orgs, roles, users
from archomata.store.invitations import Invitation
from archomata.web_json import load_body

routes = web.RouteTableDef()


def _invalid() -> BadRequest:
    return BadRequest("This invitation is invalid or has expired.", code="invalid_token")


async def _invitee(request: web.Request, invitation: Invitation,
                   body: dict[str, Any]) -> users.User | str:
    """The account that accepts: the signed-in one or an existing one proven by its
    password; or, for a new account, the hash of its password."""
    app = request.app
    async with service_tx(app[keys.DB_POOL]) as tx:
        existing = await users.get_by_email(tx, invitation.email)
    principal = request[keys.PRINCIPAL]
    if existing is not None:
        if principal is not None and principal.user_id == existing.id:
            return existing
        if "password" not in body:
            raise Unauthorized("Sign in or give your password to accept.",
                               code="invalid_credentials")
        # Under the account's login backoff: an invitation token is no licence to guess.
        if not await password_proves(request, existing, existing.email, body["password"]) \
                or existing.disabled:
            raise Unauthorized("Wrong email or password.", code="invalid_credentials")
        return existing
    errors = {f: ["Required for a new account."] for f in ("name", "password") if f not in body}
    if not errors and not MIN_LENGTH <= len(body["password"]) <= MAX_LENGTH:
        errors["password"] = [f"Between {MIN_LENGTH} and {MAX_LENGTH} characters."]
    if errors:
        raise ValidationFailed("A new account needs a name and a password.", errors=errors)
    return await app[keys.PASSWORDS].hash(body["password"])


async def _create_invitee(tx: Tx, request: web.Request, invitation: Invitation, name: str,
                          password_hash: str) -> users.User:
    """A new verified account: the invitation mail proved the address."""
    user = await users.insert(tx, email=invitation.email, name=name,
                              password_hash=password_hash, verified=True)
    if user is None:
        raise Conflict("An account with this email was just created; sign in.",
                       code="email_taken")
    await audit.record(tx, request, AuditAction.USER_REGISTERED, resource_type="user",
                       resource_id=user.id, actor_id=user.id,
                       details={"email": user.email, "via": "invitation"})
    return user


@routes.post("/api/v1/auth/accept-invitation")
@public
@doc("Join an org with an invitation token", request=AcceptInvitationSchema,
     response=LoginResultSchema)
async def accept_invitation(request: web.Request) -> web.Response:
    body = await load_body(request, AcceptInvitationSchema)
    org_id = invitations.org_of(body["token"])
    if org_id is None:
        raise _invalid()
    pool = request.app[keys.DB_POOL]
    # The scope comes from the token, but only a token whose hash matches an invitation of
    # that org finds anything, so a forged org id yields nothing.
    async with service_tx(pool, org_id=org_id) as tx:
        invitation = await invitations.pending(tx, org_id, body["token"])
    if invitation is None:
        raise _invalid()
    invitee = await _invitee(request, invitation, body)
    async with service_tx(pool, org_id=org_id) as tx:
        user = invitee if isinstance(invitee, users.User) else \
            await _create_invitee(tx, request, invitation, body["name"], invitee)
        if await members.get(tx, org_id, user.id) is not None:
            raise Conflict("You are already a member of this organisation.",
                           code="already_member")
        if not await invitations.accept(tx, org_id, invitation.id, user.id):
            raise _invalid()
        await orgs.add_member(tx, org_id, user.id, invitation.org_role)
        await roles.set_for_member(tx, org_id, user.id, list(invitation.role_ids))
        await groups.add_user_to(tx, org_id, user.id, list(invitation.group_ids))
        await audit.record(tx, request, AuditAction.MEMBER_JOINED, resource_type="member",
                           resource_id=user.id, actor_id=user.id,
                           details={"invitation_id": str(invitation.id),
                                    "org_role": invitation.org_role})
    await request.app[keys.REVOCATION].bump_authz(org_id)
    return await start_session(request, user, org_id, AuditAction.AUTH_LOGIN_SUCCEEDED,
                               details={"via": "invitation"})


