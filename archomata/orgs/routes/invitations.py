"""POST /auth/accept-invitation: joining an org through a mailed invitation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archomata import audit, keys
from archomata.access import store as roles
from archomata.access.guards import public
from archomata.audit import AuditAction
from archomata.db import Tx, service_tx
from archomata.errors import BadRequest, Conflict, Forbidden, Unauthorized, ValidationFailed
from archomata.identity.passwords import MAX_LENGTH, MIN_LENGTH
from archomata.identity.schemas.auth import LoginResultSchema
from archomata.identity.signin import (
    Attempt,
    SignInRefused,
    Via,
    open_session,
    password_proves,
    vet,
)
from archomata.identity.store import users
from archomata.identity.web import door, problem, signed_in, who
from archomata.orgs.invitation_revocation import revoke_if_orphaned
from archomata.orgs.schemas import AcceptInvitationSchema
from archomata.orgs.store import groups, invitations, members, orgs
from archomata.orgs.store.invitations import Invitation
from archomata.web.json_io import load_body
from archomata.web.openapi import doc

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
        # The lookup folds spellings (`ß` and `ss`, fullwidth) onto one account; the
        # invitation's mail proved only its own mailbox, which may be another one.
        if not users.same_mailbox(existing.email, invitation.email):
            raise Conflict("An account with a look-alike address exists: ask for an "
                           "invitation to its exact address.", code="email_conflict")
        if principal is not None and principal.user_id == existing.id:
            return existing
        if "password" not in body:
            raise Unauthorized("Sign in or give your password to accept.",
                               code="invalid_credentials")
        # Under the account's login backoff: an invitation token is no licence to guess.
        if not await password_proves(door(request), existing, existing.email,
                                     body["password"]):
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


class _Gone(Exception):
    """The invitation stopped being acceptable between its lookup and its use."""


async def _join(request: web.Request, invitation: Invitation,
                invitee: users.User | str, body: dict[str, Any]) -> users.User:
    """The invitee's account (created if new) joins the org as invited, in one
    transaction that also marks the invitation used, if it is still pending and its
    inviter still an administrator of the org."""
    org_id = invitation.org_id
    async with service_tx(request.app[keys.DB_POOL], org_id=org_id) as tx:
        user = invitee if isinstance(invitee, users.User) else \
            await _create_invitee(tx, request, invitation, body["name"], invitee)
        if await members.get(tx, org_id, user.id) is not None:
            raise Conflict("You are already a member of this organisation.",
                           code="already_member")
        if not await invitations.accept(tx, org_id, invitation.id, user.id):
            raise _Gone
        await orgs.add_member(tx, org_id, user.id, invitation.org_role)
        await roles.set_for_member(tx, org_id, user.id, list(invitation.role_ids))
        await groups.add_user_to(tx, org_id, user.id, list(invitation.group_ids))
        await audit.record(tx, request, AuditAction.MEMBER_JOINED, resource_type="member",
                           resource_id=user.id, actor_id=user.id,
                           details={"invitation_id": str(invitation.id),
                                    "org_role": invitation.org_role})
    return user


async def _refuse(request: web.Request, invitation: Invitation) -> BadRequest:
    """The answer for an invitation that cannot be used; one whose inviter lost their
    authority dies on the way (the same 400 as a revoked one: the holder of a link
    learns nothing of the org's administrators)."""
    async with service_tx(request.app[keys.DB_POOL], org_id=invitation.org_id) as tx:
        await revoke_if_orphaned(tx, request, invitation)
    return _invalid()


@routes.post("/api/v1/auth/accept-invitation")
@public
@doc("Join an org with an invitation token; 400 invalid_token once it is used, expired "
     "or revoked, or its inviter is no longer an administrator of the org; 403 "
     "org_disabled while the org is disabled", request=AcceptInvitationSchema,
     response=LoginResultSchema)
async def accept_invitation(request: web.Request) -> web.Response:
    body = await load_body(request, AcceptInvitationSchema)
    org_id = invitations.org_of(body["token"])
    if org_id is None:
        raise _invalid()
    # The scope comes from the token, but only a token whose hash matches an invitation of
    # that org finds anything, so a forged org id yields nothing.
    async with service_tx(request.app[keys.DB_POOL], org_id=org_id) as tx:
        found = await invitations.pending(tx, org_id, body["token"])
    if found is None:
        raise _invalid()
    invitation = found.invitation
    if found.org_disabled:
        # Not consumed: the link works again if the platform enables the org in time.
        raise Forbidden("This organisation is disabled.", code="org_disabled")
    if not found.inviter_is_admin:
        raise await _refuse(request, invitation)
    invitee = await _invitee(request, invitation, body)
    try:
        return await _sign_in(request, invitation, invitee, body)
    except SignInRefused as exc:
        raise problem(exc) from None


async def _sign_in(request: web.Request, invitation: Invitation, invitee: users.User | str,
                   body: dict[str, Any]) -> web.Response:
    """Through the sign-in door: an existing account is vetted before it joins, and the
    session opens in the org it joined."""
    def attempt(user: users.User) -> Attempt:
        # The token went to the invitation's address, the account's: it proves the mailbox.
        via = {"via": "invitation"}
        return Attempt(user, Via.INVITATION, invitation.org_id, details=via,
                       refusal_details=via, mailbox_proven=True)

    if isinstance(invitee, users.User):
        await vet(door(request), who(request), attempt(invitee))
    try:
        user = await _join(request, invitation, invitee, body)
    except _Gone:
        raise await _refuse(request, invitation) from None
    opened = await open_session(door(request), who(request), attempt(user))
    return signed_in(request.app[keys.CONFIG], opened)
