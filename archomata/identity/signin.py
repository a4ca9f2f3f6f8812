"""The one sign-in. Every way in proves who someone is its own way, then opens the
session here, through the same rules:

    password_sign_in   the email's password, under the account's login backoff
    SSO callback       an assertion resolved to an account (archomata.identity.linking)
    invitation         a mailed token, plus the password or access token of an existing
                       account (orgs/routes/invitations.py)
        -> vet()            the rules on the user, for a way in that changes something
                            before its session (a hash upgrade, an identity linked, an org
                            joined): nothing changes for someone the sign-in would refuse.
                            For someone with a second factor, the identity linked or the
                            org joined waits for it instead (Attempt.pending): the change
                            rides on the challenge and commits with the proven factor
                            (archomata.identity.mfa.pending)
        -> open_session()   the rules on the user and the org, [second factor], the
                            session, the row read again once it exists, the audit entry

A new rule goes in `refusal_of` (on the user) or `choose_org` (on the org), and every way
in then refuses alike: one `auth.login.failed` entry with its `reason`, and
SignInRefused, which each way in answers in its own shape (archomata.identity.web.problem,
identity/routes/sso.py). No HTTP here: collaborators are passed in (a Reception), and so is who asks
(an AuditContext: IP, user agent, request id).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, NoReturn
from uuid import UUID

from archomata import audit
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, service_tx
from archomata.identity.mfa.challenges import Challenges
from archomata.identity.reception import Reception
from archomata.identity.store import mfa, users
from archomata.identity.store.session_rows import Session
from archomata.identity.store.users import User
from archomata.tenancy import orgs
from archomata.tenancy.orgs import Membership


class Via(StrEnum):
    PASSWORD = "password"
    SSO = "sso"
    INVITATION = "invitation"

    @property
    def action(self) -> AuditAction:
        return AuditAction.AUTH_SSO_LOGIN if self is Via.SSO else AuditAction.AUTH_LOGIN_SUCCEEDED

    @property
    def amr(self) -> str:
        """How this way in proves who someone is, as the tokens' `amr` names it."""
        return "sso" if self is Via.SSO else "pwd"


class Reason(StrEnum):
    """Why a sign-in was refused: the `reason` of its audit entry."""

    UNKNOWN_EMAIL = "unknown_email"
    BAD_PASSWORD = "bad_password"
    USER_DISABLED = "user_disabled"
    EMAIL_NOT_VERIFIED = "email_not_verified"
    NOT_A_MEMBER = "not_a_member"
    ORG_DISABLED = "org_disabled"
    EVERY_ORG_DISABLED = "every_org_disabled"
    CREDENTIALS_CHANGED = "credentials_changed"  # the proven password moved meanwhile
    MEMBERSHIP_REVOKED = "membership_revoked"  # a session's org, left since


@dataclass(frozen=True, slots=True)
class SecondFactorRequired:
    """What a way in returns for a user with a second factor: no session yet, a challenge
    to answer instead (`/auth/mfa/verify` with its `mfa_token`). A success, not a refusal:
    each way in answers it in its own shape."""

    mfa_token: str
    METHODS: ClassVar[tuple[str, ...]] = ("totp", "recovery_code")


class SignInRefused(Exception):
    """A sign-in the rules refuse, audited already when it names a user."""

    def __init__(self, reason: Reason, user_id: UUID | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.user_id = user_id


@dataclass(frozen=True, slots=True)
class Attempt:
    user: User  # the row the proof was checked against
    via: Via
    org_id: UUID | None = None  # the org asked for; None: the first enabled one
    details: Mapping[str, Any] = field(default_factory=dict)  # of the session's entry
    refusal_details: Mapping[str, Any] = field(default_factory=dict)  # beside `reason`
    # The proof itself went through the account's mailbox (an invitation's mailed token, a
    # provider vouching for the address it links): it stands for a verified email.
    mailbox_proven: bool = False
    # The second factor proven with it ("otp", "recovery_code"), by /auth/mfa/verify only.
    second_factor: str | None = None
    # What this way in changes for the user (an org joined, an identity linked) once their
    # second factor is proven: kept on the challenge, server side, and applied in the
    # transaction that proves it (archomata.identity.mfa.pending). Only ever set for a
    # user with a second factor.
    pending: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Opened:
    membership: Membership | None
    session: Session
    refresh_token: str
    user: User  # as it stands once the session exists: what its tokens carry


def sso_details(provider: str) -> dict[str, Any]:
    """What every entry of an SSO refusal carries beside its reason."""
    return {"method": "sso", "provider": provider}


def refusal_of(user: User, attempt: Attempt) -> Reason | None:
    """The rules on the user. (A second factor is not a refusal: see open_session.)"""
    if user.disabled:
        return Reason.USER_DISABLED
    if not user.email_verified and not attempt.mailbox_proven:
        return Reason.EMAIL_NOT_VERIFIED
    return None


def choose_org(memberships: list[Membership], requested: UUID | None) -> Membership | None:
    """The org to sign into: the requested one, else the first enabled one.

    Never a disabled org; None for someone who belongs to no org at all. Switching org
    goes by the same rule.
    """
    if requested is not None:
        chosen = next((m for m in memberships if m.org.id == requested), None)
        if chosen is None:
            raise SignInRefused(Reason.NOT_A_MEMBER)
        if chosen.org.disabled:
            raise SignInRefused(Reason.ORG_DISABLED)
        return chosen
    enabled = [m for m in memberships if not m.org.disabled]
    if enabled:
        return enabled[0]
    if memberships:
        raise SignInRefused(Reason.EVERY_ORG_DISABLED)
    return None


async def home_org(reception: Reception, user_id: UUID) -> UUID | None:
    """The org a sign-in of the user opens when none is asked for (choose_org's), where
    the account's security events that belong to no sign-in are written (a reset asked
    for); None for someone in no enabled org: the platform's log then."""
    async with service_tx(reception.pool, user_id=user_id) as tx:
        memberships = await orgs.memberships_of(tx, user_id)
    enabled = [m for m in memberships if not m.org.disabled]
    return enabled[0].org.id if enabled else None


def still_signed_in(user: User | None, org_id: UUID | None,
                    membership: Membership | None) -> Reason | None:
    """What a session must still meet to be refreshed (`org_id` its org, `membership` the
    user's in it, if any): the user enabled, a member of an enabled org."""
    if user is None or user.disabled:
        return Reason.USER_DISABLED
    if org_id is not None and membership is None:
        return Reason.MEMBERSHIP_REVOKED
    if membership is not None and membership.org.disabled:
        return Reason.ORG_DISABLED
    return None


async def _audit_refusal(reception: Reception, who: AuditContext, user: User | None,
                         reason: Reason, details: Mapping[str, Any]) -> None:
    async with service_tx(reception.pool) as tx:
        await audit.record(tx, who.as_user(user.id if user else None),
                           AuditAction.AUTH_LOGIN_FAILED, resource_type="user",
                           resource_id=user.id if user else None,
                           details={**details, "reason": reason.value})


async def _refuse(reception: Reception, who: AuditContext, attempt: Attempt,
                  reason: Reason) -> NoReturn:
    await _audit_refusal(reception, who, attempt.user, reason, attempt.refusal_details)
    raise SignInRefused(reason, attempt.user.id)


async def vet(reception: Reception, who: AuditContext, attempt: Attempt) -> None:
    """Refuses (audited) a user the sign-in would refuse, before a way in changes anything
    on their behalf. open_session applies the same rules again: this only comes first."""
    reason = refusal_of(attempt.user, attempt)
    if reason is not None:
        await _refuse(reception, who, attempt, reason)


async def open_session(reception: Reception, who: AuditContext,
                       attempt: Attempt) -> Opened | SecondFactorRequired:
    """THE sign-in: opens a session for a user whose identity is proven, if every rule lets
    them in, and audits it; the caller answers (the login shape, or a redirect carrying
    the refresh cookie). For a user with a second factor, not yet proven: the challenge
    instead. SignInRefused, audited, otherwise.

    A password change, reset or wipe committed since the proof must not leave this session
    alive: such a change revokes the sessions it finds, and one created after that finds,
    reading the row once the session exists (waiting for a change under way to settle),
    another password hash, so the new session is ended here and nothing of it reaches the
    client. The rules judge that row too."""
    user = attempt.user
    async with service_tx(reception.pool, user_id=user.id) as tx:
        memberships = await orgs.memberships_of(tx, user.id)
        has_second_factor = await mfa.enabled(tx, user.id)
    reason = refusal_of(user, attempt)
    membership = None
    if reason is None:
        try:
            membership = choose_org(memberships, attempt.org_id)
        except SignInRefused as exc:
            reason = exc.reason
    if reason is not None:
        await _refuse(reception, who, attempt, reason)
    # A user with a second factor gets a challenge to answer instead of a session, on
    # every way in at once; the session opens here once it is answered.
    if has_second_factor and attempt.second_factor is None:
        return await ask_second_factor(reception, attempt, membership)
    if attempt.pending is not None and attempt.second_factor is None:
        # A change that was to wait for a second factor the user no longer has (removed
        # meanwhile): it must not be skipped, nor made here; signing in again makes it.
        await _refuse(reception, who, attempt, Reason.CREDENTIALS_CHANGED)
    org_id = membership.org.id if membership else None
    amr = ",".join(filter(None, (attempt.via.amr, attempt.second_factor)))
    session, refresh = await reception.sessions.create(
        user.id, org_id, who.ip or "", (who.user_agent or "")[:256], amr,
        time.time() if attempt.second_factor else None)
    async with service_tx(reception.pool, org_id=org_id, user_id=user.id) as tx:
        current = await users.get(tx, user.id, settled=True)
        if current is None or current.password_hash != user.password_hash:
            reason = Reason.CREDENTIALS_CHANGED
        else:
            reason = refusal_of(current, attempt)
        if reason is None:
            await audit.record(tx, who.as_user(user.id), attempt.via.action,
                               resource_type="session", resource_id=session.id,
                               details=dict(attempt.details))
    if reason is not None or current is None:
        await reception.sessions.revoke(session.id, user.id)
        await _refuse(reception, who, attempt, reason or Reason.CREDENTIALS_CHANGED)
    return Opened(membership, session, refresh, current)


async def has_second_factor(reception: Reception, user_id: UUID) -> bool:
    """Whether the user's ways in ask for a second factor (a way in that changes
    something asks first, so that the change can wait for it)."""
    async with service_tx(reception.pool, user_id=user_id) as tx:
        return await mfa.enabled(tx, user_id)


async def ask_second_factor(reception: Reception, attempt: Attempt,
                            membership: Membership | None = None) -> SecondFactorRequired:
    """A challenge for the attempt, holding what the session and the attempt's pending
    change need once the factor is proven."""
    return SecondFactorRequired(await Challenges(reception.sessions.redis).open(
        challenge_of(attempt, membership)))


def proof_mark(user: User) -> str:
    """What a challenge keeps of the password hash the proof was checked against (never the
    hash): a password changed before the code is answered opens no session."""
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()


def challenge_of(attempt: Attempt, membership: Membership | None = None) -> dict[str, Any]:
    """What a challenge keeps; `opening` is the org the sign-in is opening (its member's
    security events, a wrong code or a spent recovery code, are written in its log)."""
    return {"user_id": str(attempt.user.id), "via": attempt.via.value,
            "org_id": str(attempt.org_id) if attempt.org_id else None,
            "opening": str(membership.org.id) if membership else None,
            "details": dict(attempt.details), "refusal_details": dict(attempt.refusal_details),
            "mailbox_proven": attempt.mailbox_proven, "proof": proof_mark(attempt.user),
            "pending": dict(attempt.pending) if attempt.pending is not None else None}


def answered(challenge: Mapping[str, Any], user: User, second_factor: str) -> Attempt:
    """The attempt a challenge stood for, now with its second factor, against `user` as it
    stands: its own proof if the password is the one proven, else one the sign-in refuses
    (CREDENTIALS_CHANGED, as a password changed mid-login)."""
    proof = user if proof_mark(user) == challenge["proof"] else dataclasses.replace(
        user, password_hash="\x00changed")
    org_id = challenge["org_id"]
    return Attempt(proof, Via(challenge["via"]), UUID(org_id) if org_id else None,
                   challenge["details"], challenge["refusal_details"],
                   bool(challenge["mailbox_proven"]), second_factor)


def still_let_in(challenge: Mapping[str, Any], user: User) -> bool:
    """Whether the sign-in would still open the challenge's session for `user` as it stands
    (the password proven unchanged, no rule on the user refusing): a pending change is made
    only then, so nothing changes for someone the sign-in refuses after the code."""
    attempt = answered(challenge, user, "pending")
    return attempt.user is user and refusal_of(user, attempt) is None


def throttle_subject(user: User | None, email: str) -> str:
    """The login backoff's name for an account: the resolved user, else the email exactly
    as the user lookup normalises it (users.normalize_email). Never the typed spelling, or
    a fullwidth, `ß` or upper-case variant of a locked account's email would escape it."""
    return user_subject(user.id) if user is not None else f"email:{users.normalize_email(email)}"


def user_subject(user_id: UUID) -> str:
    """The login backoff's name for a known account (what a second factor's codes count
    against too)."""
    return f"user:{user_id}"


async def password_proves(reception: Reception, user: User | None, email: str,
                          password: str) -> bool:
    """Whether `password` is `user`'s (None: an unknown `email`, costing the same bcrypt),
    under the account's login backoff: RateLimited while it backs off; a wrong password,
    an unknown email or a disabled account counts against it, a right one clears it.
    Every flow that checks a password goes through here."""
    subject = throttle_subject(user, email)
    await reception.throttle.check(subject)
    matches = await reception.passwords.verify(password, user.password_hash if user else None)
    if user is None or not matches or user.disabled:
        await reception.throttle.record_failure(subject)
    else:
        await reception.throttle.reset(subject)
    return matches


async def password_sign_in(reception: Reception, who: AuditContext, email: str, password: str,
                           org_id: UUID | None) -> Opened | SecondFactorRequired:
    """Signing in with email and password.

    An unknown email, a wrong password and a disabled account cost the same bcrypt work
    (and the routes answer them alike). A hash of a lower cost than configured is upgraded.
    """
    async with service_tx(reception.pool) as tx:
        user = await users.get_by_email(tx, email)
    if not await password_proves(reception, user, email, password) or user is None:
        reason = Reason.UNKNOWN_EMAIL if user is None else Reason.BAD_PASSWORD
        await _audit_refusal(reception, who, user, reason, {})
        raise SignInRefused(reason, user.id if user else None)
    attempt = Attempt(user, Via.PASSWORD, org_id)
    await vet(reception, who, attempt)
    assert user.password_hash is not None
    if reception.passwords.needs_rehash(user.password_hash):
        upgraded = await reception.passwords.hash(password)
        async with service_tx(reception.pool) as tx:
            # The hash may have moved since it was read: another login's upgrade of this
            # same password (kept as it is, so the logins do not move it under one
            # another), or a change of password (the row checked stays: the sign-in refuses
            # the login).
            user = (await users.replace_password_hash(tx, user.id, user.password_hash,
                                                      upgraded)
                    or await _proven_now(reception, tx, user.id, password) or user)
        attempt = dataclasses.replace(attempt, user=user)
    return await open_session(reception, who, attempt)


async def _proven_now(reception: Reception, tx: Tx, user_id: UUID,
                      password: str) -> User | None:
    """The user's row if `password` verifies against the hash it holds now (one that
    moved under a caller: another login's upgrade of the same password), else None."""
    moved = await users.get(tx, user_id)
    if moved is None or moved.password_hash is None:
        return None
    return moved if await reception.passwords.verify(password, moved.password_hash) else None


async def replace_password(reception: Reception, tx: Tx, user: User, password: str,
                           new_hash: str) -> User | None:
    """Writes `new_hash` over the hash `password` was verified against (`user`'s). When
    that hash moved meanwhile, only over a stronger hash of the same password (a login's
    upgrade), never over another password: a reset or change committed since is not
    undone by a proof of the password it replaced. None when nothing was written."""
    assert user.password_hash is not None  # the password verified against it
    written = await users.replace_password_hash(tx, user.id, user.password_hash, new_hash)
    if written is None and (moved := await _proven_now(reception, tx, user.id, password)):
        assert moved.password_hash is not None
        written = await users.replace_password_hash(tx, user.id, moved.password_hash,
                                                    new_hash)
    return written
