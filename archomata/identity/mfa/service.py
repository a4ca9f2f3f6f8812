"""The second-factor flows, with no HTTP: enrolment (a secret, confirmed by a first code,
then ten recovery codes), the challenge a way in answered with (`/auth/mfa/verify`), and
what the user has.

A code is proven in a transaction scoped to its user that also takes it (the last step
accepted, or the recovery code spent), so two requests with one code cannot both pass.
Every answer (the challenge's, step-up's, the enrolment's first code) is first reserved
on the account's own second-factor counter (archomata.identity.mfa.throttle), which
refuses it unjudged during a wait, whatever the request or how many come at once. Wrong
codes count against the account's login backoff too, against the challenge (which ends
at the fifth), and are audited (`mfa.challenge_failed`) in the org the caller signs in
to or works in; no code or secret is ever logged, audited or echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from archomata import audit
from archomata.access.caller import Person
from archomata.audit import AuditAction, AuditContext
from archomata.crypto import DataKeys
from archomata.db import Tx, service_tx
from archomata.errors import BadRequest, Conflict, NotFound, Unauthorized
from archomata.identity.mfa import codes, pending
from archomata.identity.mfa.challenges import Challenges
from archomata.identity.mfa.sealing import TOTP
from archomata.identity.mfa.throttle import SecondFactorThrottle
from archomata.identity.reception import Reception
from archomata.identity.service import Renewed, reuse_entry
from archomata.identity.session_replies import Outcome
from archomata.identity.signin import (
    Opened,
    answered,
    open_session,
    password_proves,
    user_subject,
)
from archomata.identity.store import mfa, users
from archomata.tenancy import orgs


def _wrong_code() -> Unauthorized:
    return Unauthorized("The code is wrong or was used already.", code="invalid_mfa_code")


@dataclass(frozen=True, slots=True)
class Status:
    confirmed_at: datetime | None
    recovery_codes_left: int


async def status(me: Person) -> Status:
    async with me.tx() as tx:
        found = await mfa.totp(tx, me.user_id)
        left = await mfa.recovery_codes_left(tx, me.user_id)
    return Status(found.confirmed_at if found else None, left)


async def start_totp(reception: Reception, data_keys: DataKeys, me: Person,
                     current_password: str) -> tuple[str, str]:
    """A new secret to confirm (replacing one not yet confirmed): (secret, otpauth URI).
    The password is asked, under the login backoff, so a stolen access token alone
    cannot bind an attacker's authenticator."""
    async with me.tx() as tx:
        user = await users.get(tx, me.user_id)
    assert user is not None  # the token's user: the authenticator read it
    if not await password_proves(reception, user, user.email, current_password):
        raise Unauthorized("The current password is wrong.", code="invalid_credentials")
    secret = codes.new_secret()
    async with me.tx() as tx:
        if not await mfa.start_enrolment(
                tx, me.user_id, TOTP.seal(data_keys, me.user_id, secret.encode())):
            raise Conflict("A second factor is enabled already.", code="mfa_already_enabled")
    return secret, codes.otpauth_uri(secret, user.email)


async def confirm_totp(reception: Reception, data_keys: DataKeys, who: AuditContext, me: Person,
                       code: str) -> list[str]:
    """The first code proves the authenticator holds the secret: the factor is required
    at every sign-in from now on, the other sessions end, and ten recovery codes are
    returned (shown once)."""
    recovery = codes.new_recovery_codes()

    async def judge(tx: Tx) -> str | None:
        found = await mfa.totp(tx, me.user_id)
        if found is None:
            raise BadRequest("Start the enrolment first.", code="mfa_not_started")
        if found.confirmed_at is not None:
            raise Conflict("A second factor is enabled already.", code="mfa_already_enabled")
        secret = TOTP.open(data_keys, me.user_id, found.secret_sealed).decode()
        step = codes.matching_step(secret, code, after=found.last_step)
        if step is None or not await mfa.take_step(tx, me.user_id, step, confirming=True):
            return None
        await mfa.replace_recovery_codes(tx, me.user_id,
                                         [codes.recovery_digest(c) for c in recovery])
        await reception.sessions.revoke_user(tx, me.user_id, keep=me.session_id)
        await audit.record(tx, who, AuditAction.MFA_ENABLED, resource_type="user",
                           resource_id=me.user_id, details={"method": "totp"})
        return "otp"

    async def wrong() -> dict[str, object]:
        return {"via": "enrolment"}

    # A stolen access token plus a pending enrolment guesses under the same counter as
    # every other answer: the factor, and its recovery codes, are what it would win.
    await _counted(reception, who, me.user_id, me.tx, judge, wrong)
    return recovery


async def _prove(tx: Tx, data_keys: DataKeys, user_id: UUID, code: str | None,
                 recovery_code: str | None) -> str | None:
    """The factor `code` or `recovery_code` proves for the user, taken so it serves once:
    "otp", "recovery_code", or None."""
    found = await mfa.totp(tx, user_id)
    if found is None or found.confirmed_at is None:
        return None
    if code is not None:
        secret = TOTP.open(data_keys, user_id, found.secret_sealed).decode()
        step = codes.matching_step(secret, code, after=found.last_step)
        return "otp" if step is not None and await mfa.take_step(tx, user_id, step) else None
    if recovery_code is not None and await mfa.use_recovery_code(
            tx, user_id, codes.recovery_digest(recovery_code)):
        return "recovery_code"
    return None


async def _proven(reception: Reception, data_keys: DataKeys, who: AuditContext, user_id: UUID,
                  opener: Callable[[], AbstractAsyncContextManager[Tx]], code: str | None,
                  recovery_code: str | None,
                  wrong: Callable[[], Awaitable[dict[str, object]]], *,
                  audit_recovery: bool = False,
                  then: Callable[[Tx], Awaitable[None]] | None = None) -> str:
    """The factor the answer proves for the user, taken once (see _counted). `then` runs
    in the transaction that takes a proven factor: what waited for it commits with it, or
    neither does."""

    async def judge(tx: Tx) -> str | None:
        factor = await _prove(tx, data_keys, user_id, code, recovery_code)
        if factor is not None and then is not None:
            await then(tx)
        if factor == "recovery_code" and audit_recovery:
            await audit.record(tx, who, AuditAction.MFA_RECOVERY_CODE_USED,
                               resource_type="user", resource_id=user_id,
                               details={"left": await mfa.recovery_codes_left(tx, user_id)})
        return factor

    return await _counted(reception, who, user_id, opener, judge, wrong)


async def _counted(reception: Reception, who: AuditContext, user_id: UUID,
                   opener: Callable[[], AbstractAsyncContextManager[Tx]],
                   judge: Callable[[Tx], Awaitable[str | None]],
                   wrong: Callable[[], Awaitable[dict[str, object]]]) -> str:
    """What `judge` finds a second-factor answer proves (in one transaction of `opener`,
    which takes the factor with whatever it does), under the account's login backoff and
    reserved first on its second-factor counter: RateLimited, unjudged, while either
    makes it wait. A wrong answer (None) counts against the backoff, is audited
    (`mfa.challenge_failed`, with what `wrong` says, in the transaction's org) and is
    Unauthorized; a right one clears both counters."""
    subject = user_subject(user_id)
    answers = SecondFactorThrottle(reception.sessions.redis)
    await reception.throttle.check(subject)
    await answers.reserve(user_id)  # counted now: a burst cannot outrun the verdicts
    async with opener() as tx:
        factor = await judge(tx)
    if factor is None:
        await reception.throttle.record_failure(subject)
        details = await wrong()
        async with opener() as tx:
            await audit.record(tx, who, AuditAction.MFA_CHALLENGE_FAILED, resource_type="user",
                               resource_id=user_id, details=details)
        raise _wrong_code()
    await answers.proven(user_id)
    await reception.throttle.reset(subject)
    return factor


async def verify_challenge(reception: Reception, data_keys: DataKeys, who: AuditContext, token: str,
                           code: str | None, recovery_code: str | None) -> Opened:
    """Answers a way in's challenge: the session opens through the sign-in, with its second
    factor, or Unauthorized `invalid_mfa_code` (BadRequest `invalid_token` for a
    challenge used, expired, or ended by wrong codes)."""
    challenges = Challenges(reception.sessions.redis)
    challenge = await challenges.peek(token)
    if challenge is None:
        raise BadRequest("This sign-in has expired: sign in again.", code="invalid_token")
    user_id = UUID(challenge["user_id"])

    async def wrong() -> dict[str, object]:
        return {"method": "totp" if code is not None else "recovery_code",
                "wrong_codes": await challenges.wrong_code(token)}

    # What the way in changes (an org joined, an identity linked) is made with the proof.
    effects = pending.Effects(reception, who.as_user(user_id), challenge)
    try:
        factor = await _proven(reception, data_keys, who.as_user(user_id), user_id,
                               effects.opener, code, recovery_code, wrong,
                               audit_recovery=True, then=effects.apply)
    except pending.Refused as refused:  # the sign-in it stood for can no longer be
        await challenges.take(token)
        raise refused.error from None
    if await challenges.take(token) is None:  # answered meanwhile by another request
        raise BadRequest("This sign-in has expired: sign in again.", code="invalid_token")
    async with service_tx(reception.pool, user_id=user_id) as tx:
        user = await users.get(tx, user_id)
    if user is None:
        raise BadRequest("This sign-in has expired: sign in again.", code="invalid_token")
    opened = await open_session(reception, who, answered(effects.settled(), user, factor))
    assert isinstance(opened, Opened)  # its factor is proven: the sign-in asks for none
    return opened


async def step_up(reception: Reception, data_keys: DataKeys, who: AuditContext, me: Person,
                  refresh_token: str | None, code: str | None,
                  recovery_code: str | None) -> Renewed:
    """A second factor proven again on the caller's own session: it gets a fresh
    `mfa_at` (and its cookie, when it is the session's, rotates), for the routes that ask
    for a recent one (archomata.access.step_up). Wrong codes count as at sign-in."""
    assert me.session_id is not None  # a person's token always names its session

    async def wrong() -> dict[str, object]:
        return {"via": "step_up"}

    factor = await _proven(reception, data_keys, who, me.user_id, me.tx, code, recovery_code,
                           wrong, audit_recovery=True)
    session = await reception.sessions.prove_second_factor(me.session_id, factor)
    if session is None:
        raise Unauthorized("This session has been revoked.", code="session_revoked")
    rotation = None
    if refresh_token is not None:
        # A replayed cookie ends its family here as on every route that presents one,
        # audited (contract §2); no token is minted for the caller's session it ended.
        rotation = await reception.sessions.rotate(refresh_token, who.ip or "",
                                              (who.user_agent or "")[:256], only=me.session_id,
                                              on_reuse=reuse_entry(who, "step_up"))
        if rotation.outcome is Outcome.REUSE and rotation.revoked_session_id == me.session_id:
            raise Unauthorized("This session has ended; sign in again.",
                               code="session_revoked")
    async with me.tx() as tx:
        user = await users.get(tx, me.user_id, settled=True)
        memberships = await orgs.memberships_of(tx, me.user_id)
        details = {"method": factor}
        if factor == "recovery_code":
            details["left"] = str(await mfa.recovery_codes_left(tx, me.user_id))
        await audit.record(tx, who, AuditAction.AUTH_STEP_UP, resource_type="session",
                           resource_id=me.session_id, details=details)
    assert user is not None
    membership = next((m for m in memberships if m.org.id == me.org_id), None)
    if rotation is not None and rotation.session is not None:
        return Renewed(user, membership, rotation.session, rotation.token)
    return Renewed(user, membership, session, None)


async def disable_totp(reception: Reception, who: AuditContext, me: Person) -> None:
    """The second factor goes, and its recovery codes with it (a step-up route); the
    other sessions end, and this one's next tokens carry no `mfa_at` (the one in hand
    keeps it until it expires)."""
    assert me.session_id is not None
    async with me.tx() as tx:
        if not await mfa.remove(tx, me.user_id):
            raise NotFound("No second factor is enabled.")
        await reception.sessions.forget_second_factor(tx, me.user_id, keep=me.session_id)
        await audit.record(tx, who, AuditAction.MFA_DISABLED, resource_type="user",
                           resource_id=me.user_id, details={"method": "totp"})


async def regenerate_recovery_codes(who: AuditContext, me: Person) -> list[str]:
    """Ten new recovery codes, the old ones dead (a step-up route)."""
    recovery = codes.new_recovery_codes()
    async with me.tx() as tx:
        if not await mfa.enabled(tx, me.user_id):
            raise NotFound("No second factor is enabled.")
        await mfa.replace_recovery_codes(tx, me.user_id,
                                         [codes.recovery_digest(c) for c in recovery])
        await audit.record(tx, who, AuditAction.MFA_RECOVERY_CODES_REGENERATED,
                           resource_type="user", resource_id=me.user_id)
    return recovery
