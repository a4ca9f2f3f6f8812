"""Which account an SSO sign-in opens, and when a provider identity is linked to one.

    (provider, subject) already linked         -> its user signs in
    else the provider vouches for the email, and an account has it
    (spelled the same, see users.same_mailbox):
        the account's email was verified       -> the identity is linked to it
        it never was (someone may have
        registered an address not theirs)      -> the identity takes the account over:
                                                  password, sessions, access tokens and
                                                  mail links are wiped first
    an account found only through a looser
    spelling (`ß` for `ss`, fullwidth...)      -> refused (`email_conflict`)
    else no account, sign-up allowed           -> a new verified user and org
    anything else                              -> refused (SsoError)

An email the provider does not vouch for (Google `email_verified` false, Azure without
`xms_edov`) links nothing and creates nothing: whoever controls that claim could claim
anyone's account. Every new link writes `auth.sso.linked` in the same transaction. An
account the sign-in would refuse (archomata.identity.signin.vet: disabled, say) gets
no identity linked; the sign-in itself opens the session. An account with a second factor
gets nothing linked yet: the link waits on the challenge (SignIn.pending) and is made in
the transaction that proves the factor (link_pending, by archomata.identity.mfa.pending),
so an abandoned challenge links nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from uuid import UUID

from archomata import audit
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, service_tx, signup_tx
from archomata.errors import BadRequest, Conflict
from archomata.identity import onboarding
from archomata.identity.oidc import Assertion, SsoError
from archomata.identity.reception import Reception
from archomata.identity.signin import (
    Attempt,
    SignInRefused,
    Via,
    choose_org,
    has_second_factor,
    sso_details,
    vet,
)
from archomata.identity.store import identities, mail_tokens, users
from archomata.identity.store.identities import Identity
from archomata.identity.store.mail_tokens import Purpose
from archomata.identity.store.users import User, same_mailbox
from archomata.tenancy import orgs


class How(StrEnum):
    IDENTITY = "identity"        # linked before
    EMAIL_MATCH = "email_match"  # linked now to a verified account of that email
    TAKEOVER = "takeover"        # linked now to an unverified account, wiped first
    SIGNUP = "signup"            # a new account


LINK = "link"  # the kind of pending change that links an identity (identity.mfa.pending)


@dataclass(frozen=True, slots=True)
class SignIn:
    user: User
    identity: Identity | None  # None: the link is pending on the second factor
    how: How
    pending: Mapping[str, Any] | None = None  # the link to make once the factor is proven


async def resolve(reception: Reception, who: AuditContext, assertion: Assertion, *,
                  allow_signup: bool) -> SignIn:
    """The account `assertion` signs into, linking or creating it as the rules say."""
    pool = reception.pool
    async with service_tx(pool) as tx:
        identity = await identities.get_by_subject(tx, assertion.provider, assertion.subject)
        owner = await users.get(tx, identity.user_id) if identity else None
        if identity is not None and identity.email != assertion.email:
            await identities.update_email(tx, identity.id, assertion.email)
    if identity is not None and owner is not None:
        return SignIn(owner, identity, How.IDENTITY)
    if assertion.email is None or not assertion.email_verified:
        raise SsoError("email_not_verified",
                       "email_not_verified" if assertion.email else "email_missing")
    async with service_tx(pool) as tx:
        user = await users.get_by_email(tx, assertion.email)
    if user is None:
        if not allow_signup:
            raise SsoError("signup_disabled", "no_account_signup_disabled")
        return await _sign_up(reception, who, assertion)
    # Found through the lookup's folding (`ß`/`ss`, fullwidth...): possibly another
    # person's mailbox, so the provider's word is no proof of this account.
    if not same_mailbox(user.email, assertion.email):
        raise SsoError("email_conflict", "email_spelled_differently", user_id=user.id)
    # The provider vouches for the address it links (and a takeover marks it verified).
    await vet(reception, who, Attempt(user, Via.SSO, mailbox_proven=True,
                                 refusal_details=sso_details(assertion.provider)))
    if await has_second_factor(reception, user.id):
        return SignIn(user, None, How.EMAIL_MATCH, {
            "kind": LINK, "org_id": _str(await _home_org(reception, user.id)),
            "provider": assertion.provider, "subject": assertion.subject,
            "email": assertion.email})
    return await _link(reception, who, user, assertion)


def _str(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


async def _sign_up(reception: Reception, who: AuditContext, assertion: Assertion) -> SignIn:
    assert assertion.email is not None
    async with signup_tx(reception.pool) as tx:
        try:
            account = await onboarding.create_in(
                tx, who, email=assertion.email, name=assertion.name, password_hash=None,
                org_name=f"{assertion.name}'s organisation"[:200], verified=True)
        except Conflict as exc:  # registered between our look-up and this insert
            raise SsoError("sso_failed", "account_created_concurrently") from exc
        identity = await identities.insert(tx, account.user.id, assertion.provider,
                                           assertion.subject, assertion.email)
        if identity is None:  # the same identity signed up in a parallel callback
            raise SsoError("sso_failed", "identity_linked_concurrently")
        await _audit_link(tx, who, identity, How.SIGNUP, org_id=account.org.id)
    return SignIn(account.user, identity, How.SIGNUP)


async def _home_org(reception: Reception, user_id: UUID) -> UUID | None:
    """The org whose log records the link: the one the session will most likely open in."""
    async with service_tx(reception.pool, user_id=user_id) as tx:
        memberships = await orgs.memberships_of(tx, user_id)
    try:
        home = choose_org(memberships, None)
    except SignInRefused:  # every org disabled: the sign-in refuses the session anyway
        return None
    return home.org.id if home else None


async def _link(reception: Reception, who: AuditContext, user: User,
                assertion: Assertion) -> SignIn:
    org_id = await _home_org(reception, user.id)
    async with service_tx(reception.pool, org_id=org_id, user_id=user.id) as tx:
        linked = await _link_in(reception, tx, who, user, assertion.provider, assertion.subject,
                                assertion.email)
        if linked is None:
            raise SsoError("sso_failed", "identity_linked_concurrently", user_id=user.id)
        identity, how = linked
        user_now = await users.get(tx, user.id)
    assert user_now is not None
    return SignIn(user_now, identity, how)


async def _link_in(reception: Reception, tx: Tx, who: AuditContext, user: User, provider: str,
                   subject: str, email: str | None) -> tuple[Identity, How] | None:
    """The link and its entry, in the caller's transaction (scoped to the user and their
    home org); None when the identity is linked already."""
    identity = await identities.insert(tx, user.id, provider, subject, email)
    if identity is None:
        return None
    how = How.EMAIL_MATCH
    if not user.email_verified:
        await mail_tokens.lock_open(tx, user.id)  # the links before the row, as a reset
    if not user.email_verified and await identities.reset_unverified_user(tx, user.id):
        how = How.TAKEOVER
        await _wipe_access(reception, tx, user.id)
    await _audit_link(tx, who, identity, how)
    return identity, how


async def link_pending(reception: Reception, tx: Tx, who: AuditContext, pending: Mapping[str, Any],
                       user: User) -> dict[str, Any]:
    """Makes a link that waited for the user's second factor, in `tx`, the transaction
    that proves it: the details it gives the session's entry. 400 invalid_token (and `tx`
    must roll back) when the identity was linked to someone else meanwhile, or the
    account's address no longer is the one the provider vouched for."""
    if pending["email"] is None or not same_mailbox(user.email, pending["email"]):
        raise sign_in_again()
    linked = await _link_in(reception, tx, who, user, pending["provider"], pending["subject"],
                            pending["email"])
    if linked is None:
        found = await identities.get_by_subject(tx, pending["provider"], pending["subject"])
        if found is None or found.user_id != user.id:
            raise sign_in_again()
        # Linked to this same person meanwhile (another of their sign-ins): nothing to do.
        return {"identity_id": str(found.id), "via": How.IDENTITY.value}
    identity, how = linked
    return {"identity_id": str(identity.id), "via": how.value}


def sign_in_again() -> BadRequest:
    return BadRequest("This sign-in has expired: sign in again.", code="invalid_token")


async def _wipe_access(reception: Reception, tx: Tx, user_id: UUID) -> None:
    """Whoever registered the address first loses every way back in: the password is
    gone (reset_unverified_user), and so are sessions, access tokens and mailed links."""
    for purpose in Purpose:
        await mail_tokens.retire_all(tx, user_id, purpose)
    cut = await reception.sessions.cut_off(tx, user_id, end_sessions=True)
    await users.set_tokens_valid_after(tx, user_id, cut)


async def _audit_link(tx: Tx, who: AuditContext, identity: Identity, how: How,
                      org_id: UUID | None = None) -> None:
    details: dict[str, object] = {"provider": identity.provider, "via": how.value}
    if how is How.TAKEOVER:
        details["wiped"] = ["password", "sessions", "access_tokens", "mail_links"]
    await audit.record(tx, who.as_user(identity.user_id), AuditAction.AUTH_SSO_LINKED,
                       resource_type="user_identity", resource_id=identity.id, org_id=org_id,
                       details=details)
