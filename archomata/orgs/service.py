"""The orgs' flows, with no HTTP in them: the rules shared by their routes, disabling and
enabling an org (set_org_disabled: its Redis mark ordered around the commit), and joining
an org through a mailed invitation (POST /auth/accept-invitation), read top to bottom:

    accept_invitation
        -> the pending invitation its token names (its org enabled, its inviter still an
           administrator: an orphaned one dies on the way)
        -> the invitee: the signed-in account, an existing one proven by its password
           (under its login backoff), or a new account's name and password
        -> vetted by the sign-in rules before anything changes on its behalf
        -> an existing account with a second factor: nothing changes yet. The joining
           waits on the challenge (its invitation's id, never its token) and is made,
           the invitation found pending again, in the transaction that proves the
           factor (join_pending, by archomata.identity.mfa.pending): an abandoned
           challenge leaves the invitation usable
        -> else one transaction: the account (if new) joins as invited, the invitation used
        -> the session, through the one sign-in (archomata.identity.signin)

Refusals are ApiErrors, and signin.SignInRefused, which the route answers as a login does;
a user with a second factor gets signin.SecondFactorRequired, answered as a login does.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from archomata import audit
from archomata.access import roles
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, TxOpener, service_tx
from archomata.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from archomata.identity import new_password
from archomata.identity.reception import Reception
from archomata.identity.revocation import Revocation
from archomata.identity.signin import (
    Attempt,
    Opened,
    SecondFactorRequired,
    Via,
    ask_second_factor,
    open_session,
    password_proves,
    vet,
)
from archomata.identity.store import mfa, users
from archomata.orgs.invitation_revocation import revoke_if_orphaned
from archomata.orgs.store import groups, invitations, members
from archomata.orgs.store.invitations import Invitation
from archomata.tenancy import orgs
from archomata.tenancy.orgs import Org


async def check_refs(tx: Tx, org_id: UUID, role_ids: list[UUID],
                     group_ids: list[UUID] | None = None) -> None:
    """422 naming every role id, and every group id of the org, that does not exist."""
    errors: dict[str, list[str]] = {}
    missing_roles = await roles.unknown_ids(tx, role_ids)
    if missing_roles:
        errors["role_ids"] = [f"Unknown role {r}." for r in missing_roles]
    missing_groups = await groups.unknown_ids(tx, org_id, group_ids or [])
    if missing_groups:
        errors["group_ids"] = [f"Unknown group {g}." for g in missing_groups]
    if errors:
        raise ValidationFailed("Some referenced roles or groups do not exist.", errors=errors)


async def set_org_disabled(open_tx: TxOpener, who: AuditContext, revocation: Revocation,
                           org_id: UUID, disabled: bool) -> Org:
    """Disables (or enables) the org, audited; 404 for an org that does not exist.

    Its tokens, sessions and agent keys are refused by Redis's mark, which moves on the
    side that is never too lenient: a disabling reaches Redis before its commit (a commit
    that then fails refuses the org a moment too long, never accepts it a moment too
    long), an enabling only after its commit."""
    async with open_tx() as tx:
        if await orgs.get(tx, org_id) is None:
            raise NotFound("No such organisation.")
        # The entry first: the database changes the column only once it is written.
        await audit.record(tx, who, AuditAction.ORG_DISABLED if disabled
                           else AuditAction.ORG_ENABLED, resource_type="org",
                           resource_id=org_id, org_id=org_id)
        org = await orgs.set_disabled(tx, org_id, disabled)
        assert org is not None  # the row was there in this transaction
        if disabled:
            await revocation.set_org_disabled(org_id, True)
    if not disabled:
        await revocation.set_org_disabled(org_id, False)
    return org


@dataclass(frozen=True, slots=True)
class Acceptance:
    """What the invitee brought: a token, and who they are."""

    token: str
    signed_in_user: UUID | None = None  # the person of a valid access token, if any
    password: str | None = None  # an existing account's, or a new account's
    name: str | None = None  # a new account's


def _invalid() -> BadRequest:
    return BadRequest("This invitation is invalid or has expired.", code="invalid_token")


def _org_disabled() -> Forbidden:
    return Forbidden("This organisation is disabled.", code="org_disabled")


def _already_member() -> Conflict:
    return Conflict("You are already a member of this organisation.", code="already_member")


class _Gone(Exception):
    """The invitation stopped being acceptable between its lookup and its use."""


async def accept_invitation(reception: Reception, who: AuditContext,
                            acceptance: Acceptance) -> Opened | SecondFactorRequired:
    """The invitee joins the org and signs into it; 400 invalid_token for a token that is
    unknown, used, expired, revoked or whose inviter lost their authority (alike: the
    holder of a link learns nothing of the org's administrators), 403 org_disabled while
    the org is disabled (the link is not consumed)."""
    invitation = await _pending(reception, who, acceptance.token)
    invitee = await _invitee(reception, invitation, acceptance)
    if isinstance(invitee, users.User):
        await vet(reception, who, _attempt(invitation, invitee))
        if await _second_factor_first(reception, invitation, invitee):
            return await _join_after_second_factor(reception, invitation, invitee)
    try:
        user = await _join(reception, who, invitation, invitee, acceptance.name)
    except _Gone:
        raise await _refuse(reception, who, invitation) from None
    return await open_session(reception, who, _attempt(invitation, user))


async def _pending(reception: Reception, who: AuditContext, token: str) -> Invitation:
    org_id = invitations.org_of(token)
    if org_id is None:
        raise _invalid()
    # The scope comes from the token, but only a token whose hash matches an invitation of
    # that org finds anything, so a forged org id yields nothing.
    async with service_tx(reception.pool, org_id=org_id) as tx:
        found = await invitations.pending(tx, org_id, token)
    if found is None:
        raise _invalid()
    if found.org_disabled:
        raise _org_disabled()
    if not found.inviter_is_admin:
        raise await _refuse(reception, who, found.invitation)
    return found.invitation


JOIN = "join"  # the kind of pending change that joins an org (identity.mfa.pending)


async def _second_factor_first(reception: Reception, invitation: Invitation,
                               user: users.User) -> bool:
    """Whether the account has a second factor, so that joining waits for it; a member
    already is told so now, rather than after the code."""
    async with service_tx(reception.pool, org_id=invitation.org_id, user_id=user.id) as tx:
        if await members.get(tx, invitation.org_id, user.id) is not None:
            raise _already_member()
        return await mfa.enabled(tx, user.id)


async def _join_after_second_factor(reception: Reception, invitation: Invitation,
                                    user: users.User) -> SecondFactorRequired:
    """The challenge, the joining pending on it."""
    pending = {"kind": JOIN, "org_id": str(invitation.org_id),
               "invitation_id": str(invitation.id)}
    return await ask_second_factor(reception, replace(_attempt(invitation, user), pending=pending))


async def join_pending(tx: Tx, who: AuditContext, pending: Mapping[str, Any],
                       user: users.User) -> None:
    """Makes a joining that waited for the user's second factor, in `tx` (scoped to the
    invitation's org), the one that proves it: only if the invitation is still pending
    (not used, revoked or expired meanwhile, its inviter still an administrator) and its
    org enabled; else 400 invalid_token (403 org_disabled), and `tx` must roll back."""
    org_id = UUID(pending["org_id"])
    found = await invitations.pending_by_id(tx, org_id, UUID(pending["invitation_id"]))
    if found is None or not found.inviter_is_admin:
        raise _invalid()
    if found.org_disabled:
        raise _org_disabled()
    try:
        await _join_in(tx, who, found.invitation, user)
    except _Gone:
        raise _invalid() from None


def _attempt(invitation: Invitation, user: users.User) -> Attempt:
    # The token went to the invitation's address, the account's: it proves the mailbox.
    via = {"via": "invitation"}
    return Attempt(user, Via.INVITATION, invitation.org_id, details=via,
                   refusal_details=via, mailbox_proven=True)


async def _invitee(reception: Reception, invitation: Invitation,
                   acceptance: Acceptance) -> users.User | str:
    """The account that accepts: the signed-in one or an existing one proven by its
    password; or, for a new account, the hash of its password."""
    async with service_tx(reception.pool) as tx:
        existing = await users.get_by_email(tx, invitation.email)
    if existing is not None:
        # The lookup folds spellings (`ß` and `ss`, fullwidth) onto one account; the
        # invitation's mail proved only its own mailbox, which may be another one.
        if not users.same_mailbox(existing.email, invitation.email):
            raise Conflict("An account with a look-alike address exists: ask for an "
                           "invitation to its exact address.", code="email_conflict")
        if acceptance.signed_in_user == existing.id:
            return existing
        if acceptance.password is None:
            raise Unauthorized("Sign in or give your password to accept.",
                               code="invalid_credentials")
        # Under the account's login backoff: an invitation token is no licence to guess.
        if not await password_proves(reception, existing, existing.email, acceptance.password):
            raise Unauthorized("Wrong email or password.", code="invalid_credentials")
        return existing
    errors = {field: ["Required for a new account."]
              for field, value in (("name", acceptance.name), ("password", acceptance.password))
              if value is None}
    if errors or acceptance.password is None:
        raise ValidationFailed("A new account needs a name and a password.", errors=errors)
    new_password.check(acceptance.password)
    return await reception.passwords.hash(acceptance.password)


async def _join(reception: Reception, who: AuditContext, invitation: Invitation,
                invitee: users.User | str, name: str | None) -> users.User:
    """The invitee's account (created if new) joins the org as invited, in one
    transaction that also marks the invitation used, if it is still pending and its
    inviter still an administrator of the org."""
    async with service_tx(reception.pool, org_id=invitation.org_id) as tx:
        if isinstance(invitee, users.User):
            user = invitee
        else:
            assert name is not None  # _invitee asked for it
            user = await _create_invitee(tx, who, invitation, name, invitee)
        await _join_in(tx, who, invitation, user)
    return user


async def _join_in(tx: Tx, who: AuditContext, invitation: Invitation,
                   user: users.User) -> None:
    """The joining itself, in the caller's transaction (scoped to the invitation's org):
    _Gone unless the invitation is still pending and its inviter an administrator."""
    org_id = invitation.org_id
    if await members.get(tx, org_id, user.id) is not None:
        raise _already_member()
    if not await invitations.accept(tx, org_id, invitation.id, user.id):
        raise _Gone
    await orgs.add_member(tx, org_id, user.id, invitation.org_role)
    await roles.set_for_member(tx, org_id, user.id, list(invitation.role_ids))
    await groups.add_user_to(tx, org_id, user.id, list(invitation.group_ids))
    await audit.record(tx, who.or_user(user.id), AuditAction.MEMBER_JOINED,
                       resource_type="member", resource_id=user.id,
                       details={"invitation_id": str(invitation.id),
                                "org_role": invitation.org_role})


async def _create_invitee(tx: Tx, who: AuditContext, invitation: Invitation, name: str,
                          password_hash: str) -> users.User:
    """A new verified account: the invitation mail proved the address."""
    user = await users.insert(tx, email=invitation.email, name=name,
                              password_hash=password_hash, verified=True)
    if user is None:
        raise Conflict("An account with this email was just created; sign in.",
                       code="email_taken")
    await audit.record(tx, who.or_user(user.id), AuditAction.USER_REGISTERED,
                       resource_type="user", resource_id=user.id,
                       details={"email": user.email, "via": "invitation"})
    return user


async def _refuse(reception: Reception, who: AuditContext, invitation: Invitation) -> BadRequest:
    """The answer for an invitation that cannot be used; one whose inviter lost their
    authority dies on the way."""
    async with service_tx(reception.pool, org_id=invitation.org_id) as tx:
        await revoke_if_orphaned(tx, who, invitation)
    return _invalid()
