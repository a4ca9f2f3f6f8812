"""Signing in through an OpenID provider: the callback's flow, beside the password
sign-in (archomata.identity.signin), with no HTTP in it (the route, identity/routes/sso.py,
turns its outcome into a redirect):

    sso_sign_in
        -> the login state the callback names: known, unexpired, unused, of this
           provider, bound to this browser (SsoError `invalid_state` otherwise)
        -> the provider's answer: an error it sent, else its code redeemed for a
           verified assertion (archomata.identity.oidc)
        -> the account it signs into, linked or created (archomata.identity.linking)
        -> the session, through the one sign-in, or the second factor's challenge

Refusals are SsoError (before the sign-in: the route audits them) and SignInRefused (the
sign-in's, audited by it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from archomata.audit import AuditContext
from archomata.identity import linking
from archomata.identity.oidc import OidcClient, SsoError
from archomata.identity.reception import Reception
from archomata.identity.signin import (
    Attempt,
    Opened,
    SecondFactorRequired,
    Via,
    open_session,
    sso_details,
)
from archomata.identity.sso_state import LoginStates

_PROVIDER_ERROR = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True, slots=True)
class Callback:
    """What the provider's redirect brought back (its query) and the browser's binding
    cookie; None: absent."""

    state: str | None
    code: str | None
    error: str | None
    binding_cookie: str | None


@dataclass(frozen=True, slots=True)
class Returned:
    next: str  # where the SPA asked to go once signed in
    outcome: Opened | SecondFactorRequired


async def sso_sign_in(reception: Reception, who: AuditContext, client: OidcClient,
                      callback: Callback, *, allow_signup: bool) -> Returned:
    """The sign-in the callback completes; SsoError or SignInRefused otherwise."""
    if not callback.state:
        raise SsoError("invalid_state", "state_missing")
    pending = await LoginStates(reception.sessions.redis).take(callback.state)
    if pending is None:
        raise SsoError("invalid_state", "state_unknown_expired_or_used")
    if pending.provider != client.name:
        raise SsoError("invalid_state", "state_of_another_provider")
    if not pending.bound_to(callback.binding_cookie):
        raise SsoError("invalid_state", "state_not_bound_to_this_browser")
    if callback.error is not None:
        said = callback.error if _PROVIDER_ERROR.fullmatch(callback.error) else "other"
        raise SsoError("access_denied", f"provider_error:{said}")
    if not callback.code:
        raise SsoError("sso_failed", "code_missing")
    assertion = await client.sign_in(callback.code, pending.code_verifier, pending.nonce)
    signed_in = await linking.resolve(reception, who, assertion, allow_signup=allow_signup)
    outcome = await open_session(reception, who, Attempt(
        signed_in.user, Via.SSO, details=_session_details(client.name, signed_in),
        refusal_details=sso_details(client.name), pending=signed_in.pending))
    return Returned(pending.next, outcome)


def _session_details(provider: str, signed_in: linking.SignIn) -> dict[str, str]:
    """What the session's entry says of the identity (one whose link waits for the second
    factor: named once it is made, archomata.identity.mfa.pending)."""
    details = {"provider": provider, "via": signed_in.how.value}
    if signed_in.identity is not None:
        details["identity_id"] = str(signed_in.identity.id)
    return details
