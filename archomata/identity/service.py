"""The identity flows after signing in, read top to bottom with no HTTP: the mail
links, email verification, password reset and change, refresh, org switch, logout and
the sessions of a signed-in person.

Each flow is handed what it works with: the sign-in `Reception` (pool, sessions, passwords,
login backoff), who asks (an AuditContext), and for a signed-in person the doors of their
own scope (a `Person`'s `tx`, and `into` for one of their other orgs: archomata.access.caller,
from the verified token); a flow never widens the scope it was given. They raise the ApiError tree
(archomata.errors), or SignInRefused for a session the sign-in rules no longer let in,
which the route answers in its shape (identity.web.problem, refresh_problem).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis

from archomata import audit
from archomata.access.caller import Person
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, service_tx
from archomata.errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from archomata.identity import signin
from archomata.identity.reception import Reception
from archomata.identity.session_replies import Ended, Outcome, Record
from archomata.identity.signin import SignInRefused
from archomata.identity.store import mail_tokens, users
from archomata.identity.store.mail_tokens import Purpose
from archomata.identity.store.session_rows import Session
from archomata.identity.store.users import User
from archomata.redis_boundary import REDIS_FAILURES
from archomata.tenancy import orgs
from archomata.tenancy.orgs import Membership

MAIL_COOLDOWN_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Renewed:
    """A session carried on (refreshed, or moved to another org): what its answer needs."""

    user: User
    membership: Membership | None
    session: Session
    refresh_token: str | None  # the rotated cookie, when there was one to rotate


def _invalid_link() -> BadRequest:
    return BadRequest("This link is invalid or has expired.", code="invalid_token")


def _session_ended() -> Unauthorized:
    return Unauthorized("This session has ended; sign in again.", code="session_revoked")


def _wrong_current_password() -> ValidationFailed:
    return ValidationFailed("The current password is wrong.", code="invalid_current_password",
                            errors={"current_password": ["Wrong password."]})


# --- mail links -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class MailLink:
    """What one kind of mailed link is: its purpose, lifetime, audit action, and which
    accounts get one."""

    purpose: Purpose
    ttl_seconds: int
    action: AuditAction
    eligible: Callable[[User], bool]


def verification_link(ttl_seconds: int) -> MailLink:
    return MailLink(Purpose.VERIFY_EMAIL, ttl_seconds, AuditAction.AUTH_EMAIL_VERIFICATION_SENT,
                    lambda user: not user.email_verified and not user.disabled)


def reset_link(ttl_seconds: int) -> MailLink:
    return MailLink(Purpose.PASSWORD_RESET, ttl_seconds,
                    AuditAction.AUTH_PASSWORD_RESET_REQUESTED, lambda user: not user.disabled)


async def first_mail_in_a_while(redis: Redis, user_id: UUID, purpose: Purpose | str) -> bool:
    """One link per account and purpose per MAIL_COOLDOWN_SECONDS, whatever address or
    spelling of the email asks (keyed on the account), so that many IPs together cannot
    flood a mailbox; the link already sent stays good. Redis down: the per-IP limit alone
    bounds it, rather than no one getting their link."""
    try:
        return bool(await redis.set(f"mailed:{purpose}:{user_id}", 1, nx=True,
                                    ex=MAIL_COOLDOWN_SECONDS))
    except REDIS_FAILURES:  # fail open: the per-IP limit still bounds it (see above)
        return True


async def issue_mail_link(reception: Reception, redis: Redis, who: AuditContext, email: str,
                          link: MailLink) -> tuple[str, str] | None:
    """A fresh single-use link for the email's account when it is eligible and was not
    mailed one a moment ago (older links die), audited: the address and token to mail,
    else None. The route answers alike either way, so nothing tells which emails exist.

    The entry goes in the log of the org a sign-in of the account opens by default (its
    first enabled org), whose administrators watch over it; the platform's for an account
    with none."""
    async with service_tx(reception.pool) as tx:
        user = await users.get_by_email(tx, email)
    if user is None or not link.eligible(user) or not await first_mail_in_a_while(
            redis, user.id, link.purpose):
        return None
    home = await signin.home_org(reception, user.id)
    async with service_tx(reception.pool, org_id=home, user_id=user.id) as tx:
        await mail_tokens.retire_all(tx, user.id, link.purpose)
        token = await mail_tokens.issue(tx, user.id, link.purpose, link.ttl_seconds)
        await audit.record(tx, who.or_user(user.id), link.action,
                           resource_type="user", resource_id=user.id)
    return user.email, token


async def mail_link(reception: Reception, redis: Redis, who: AuditContext, email: str,
                    link: MailLink, send: Callable[[str, str], Awaitable[bool]]) -> None:
    """issue_mail_link, then its mail: the work of a reset or resend request, which the
    route runs after its answer (archomata.web.later)."""
    mail = await issue_mail_link(reception, redis, who, email, link)
    if mail is not None:
        await send(*mail)


async def verify_email(reception: Reception, who: AuditContext, token: str) -> User:
    async with service_tx(reception.pool) as tx:
        user_id = await mail_tokens.consume(tx, token, Purpose.VERIFY_EMAIL)
        if user_id is None:
            raise _invalid_link()
        user = await users.mark_verified(tx, user_id)
        assert user is not None
        await audit.record(tx, who.or_user(user.id), AuditAction.AUTH_EMAIL_VERIFIED,
                           resource_type="user", resource_id=user.id)
    return user


# --- passwords --------------------------------------------------------------------------

async def confirm_password_reset(reception: Reception, who: AuditContext, token: str,
                                 new_password: str) -> None:
    """Sets the new password of the link's account; every session of it ends, and every
    access token minted so far dies. The link is checked before the bcrypt work (no
    hashing for a forged link) and spent in the transaction that writes the password."""
    async with service_tx(reception.pool) as tx:
        owner = await mail_tokens.peek(tx, token, Purpose.PASSWORD_RESET)
    if owner is None:
        raise _invalid_link()
    password_hash = await reception.passwords.hash(new_password)
    home = await signin.home_org(reception, owner)  # its entry's org, as for the request
    # Scoped to the link's user: the sessions it ends are revoked in this transaction.
    async with service_tx(reception.pool, org_id=home, user_id=owner) as tx:
        user_id = await mail_tokens.consume(tx, token, Purpose.PASSWORD_RESET)
        if user_id is None or user_id != owner:  # spent meanwhile (a link names one user)
            raise _invalid_link()
        await users.set_password_hash(tx, user_id, password_hash)
        await users.mark_verified(tx, user_id)  # the mailbox answered: the address is real
        await mail_tokens.retire_all(tx, user_id, Purpose.PASSWORD_RESET)
        cut = await reception.sessions.cut_off(tx, user_id, end_sessions=True)
        await users.set_tokens_valid_after(tx, user_id, cut)
        await audit.record(tx, who.or_user(user_id),
                           AuditAction.AUTH_PASSWORD_RESET_COMPLETED, resource_type="user",
                           resource_id=user_id)


async def change_password(reception: Reception, who: AuditContext, me: Person,
                          current_password: str, new_password: str) -> None:
    """Replaces the password the caller proves; every other session of theirs ends.

    A stolen access token must not become a password oracle: the account's login backoff
    counts these guesses too, and refuses them (429) while it backs off."""
    async with me.tx() as tx:
        user = await users.get(tx, me.user_id)
    assert user is not None  # the token's user: the authenticator read it
    if not await signin.password_proves(reception, user, user.email, current_password):
        raise _wrong_current_password()
    password_hash = await reception.passwords.hash(new_password)
    async with me.tx() as tx:
        # The reset links first, then the user's row: the order a reset confirm locks
        # them in (it spends its link, then writes the password). The other order
        # deadlocks against a reset confirmed at the same moment.
        await mail_tokens.retire_all(tx, user.id, Purpose.PASSWORD_RESET)
        if await signin.replace_password(reception, tx, user, current_password,
                                         password_hash) is None:
            raise _wrong_current_password()
        await reception.sessions.revoke_user(tx, user.id, keep=me.session_id)
        await audit.record(tx, who, AuditAction.AUTH_PASSWORD_CHANGED, resource_type="user",
                           resource_id=user.id)


# --- sessions ---------------------------------------------------------------------------

def reuse_entry(who: AuditContext, via: str) -> Record:
    """A replayed refresh token revoked its family: audited in the family's own org (the
    sessions store's record of it, not the caller's say), in the transaction that ends it,
    on whichever route saw it."""
    async def record(tx: Tx, ended: Ended) -> None:
        await audit.record(tx, who.or_user(ended.user_id),
                           AuditAction.AUTH_REFRESH_REUSE_DETECTED, resource_type="session",
                           resource_id=ended.session_id, details={"via": via})
    return record


async def refresh(reception: Reception, who: AuditContext, token: str) -> Renewed:
    """Rotates the refresh token's family; a replayed token revokes it (audited). A
    session whose user or org the sign-in rules no longer let in is ended here:
    SignInRefused with the reason. At most FAMILY_LIMIT refreshes a minute per family."""
    rotation = await reception.sessions.rotate(
        token, who.ip or "", (who.user_agent or "")[:256],
        limited=True, on_reuse=reuse_entry(who, "refresh"))
    if rotation.session is None or rotation.token is None:
        raise _session_ended()
    session = rotation.session
    async with service_tx(reception.pool, user_id=session.user_id) as tx:
        user = await users.get(tx, session.user_id, settled=True)
        memberships = await orgs.memberships_of(tx, session.user_id)
    membership = next((m for m in memberships if m.org.id == session.org_id), None)
    ended = signin.still_signed_in(user, session.org_id, membership)
    if ended is not None:
        await reception.sessions.revoke(session.id, session.user_id)
        raise SignInRefused(ended, session.user_id)
    assert user is not None
    return Renewed(user, membership, session, rotation.token)


async def logout(reception: Reception, who: AuditContext, session_id: UUID | None,
                 owner: UUID | None, token: str | None) -> None:
    """Ends the session the access token (`session_id`, `owner`) or the refresh cookie
    names (nothing when neither names a live one), in PostgreSQL with its audit entry,
    then in Redis: two logouts racing audit one of them; a replayed cookie is audited as
    the reuse it is; a retry after a 503 ends it whatever Redis holds."""
    if session_id is None and token is None:
        return

    async def record(tx: Tx, ended: Ended) -> None:
        if ended.stale_token:
            await reuse_entry(who, "logout")(tx, ended)
            return
        await audit.record(tx, who.or_user(ended.user_id), AuditAction.AUTH_LOGOUT,
                           resource_type="session", resource_id=ended.session_id)

    # `owner`: the access token's person, who owns its session (with no access token,
    # the cookie names the family).
    await reception.sessions.end(session_id, token=token, owner=owner, record=record,
                            known=session_id is not None)


async def logout_all(reception: Reception, who: AuditContext, me: Person) -> None:
    """Ends every session of the caller and kills every access token minted so far, in
    Redis at once and in PostgreSQL (tokens_valid_after) for when Redis is rebuilt."""
    async with me.tx() as tx:
        cut = await reception.sessions.cut_off(tx, me.user_id, end_sessions=True)
        await users.set_tokens_valid_after(tx, me.user_id, cut)
        await audit.record(tx, who, AuditAction.AUTH_LOGOUT_ALL, resource_type="user",
                           resource_id=me.user_id)


async def delete_session(reception: Reception, who: AuditContext, me: Person,
                         session_id: UUID) -> None:
    """Ends one of the caller's sessions, in PostgreSQL with its audit entry, then in
    Redis; another person's answers as a missing one."""
    async def record(tx: Tx, ended: Ended) -> None:
        await audit.record(tx, who, AuditAction.AUTH_SESSION_REVOKED, resource_type="session",
                           resource_id=ended.session_id)

    if await reception.sessions.end(session_id, owner=me.user_id, record=record) is None:
        raise NotFound("No such session.")


async def switch_org(reception: Reception, who: AuditContext, me: Person, token: str | None,
                     org_id: UUID) -> Renewed:
    """Moves the caller's session to another org of theirs, by the sign-in rules
    (SignInRefused: not a member, or a disabled org). With the session's own refresh
    cookie, the family rotates too (a replayed cookie revokes it); a cookie of another
    family is left alone."""
    assert me.session_id is not None  # a person's token always names its session
    async with me.tx() as tx:
        memberships = await orgs.memberships_of(tx, me.user_id)
    membership = signin.choose_org(memberships, org_id)
    assert membership is not None  # an org was asked for: choose_org refuses or finds it
    rotation = None
    if token is not None:
        rotation = await reception.sessions.rotate(
            token, who.ip or "", (who.user_agent or "")[:256], new_org=membership.org.id,
            only=me.session_id, limited=True, on_reuse=reuse_entry(who, "switch_org"))
        if rotation.outcome is Outcome.REUSE:
            raise _session_ended()
    session = rotation.session if rotation is not None else None
    if session is None:  # no cookie, or one of another (or no) family: nothing to rotate
        session = await reception.sessions.move_to_org(me.session_id, membership.org.id,
                                                  limited=True)
    if session is None:
        raise Unauthorized("This session has been revoked.", code="session_revoked")
    async with me.into(membership.org.id) as tx:
        user = await users.get(tx, me.user_id, settled=True)
        assert user is not None
        await audit.record(tx, who, AuditAction.AUTH_ORG_SWITCHED, resource_type="org",
                           resource_id=membership.org.id,
                           details={"from_org_id": str(me.org_id) if me.org_id else None})
    return Renewed(user, membership, session,
                   rotation.token if rotation is not None else None)

