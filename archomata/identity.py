"""Signing people in: choosing the org, opening a session, issuing the access token, and
the refresh cookie that carries the session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit, keys
from archomata.audit import AuditAction
from archomata.config import Config
from archomata.db import Tx, service_tx
from archomata.errors import Forbidden, Unauthorized
from archomata.schemas.auth import LoginResultSchema
from archomata.security import tokens
from archomata.security.sessions import Session
from archomata.store import orgs, users
from archomata.store.orgs import Membership
from archomata.store.users import User

REFRESH_COOKIE = "archomata_refresh"
COOKIE_PATH = "/api/v1/auth"


def choose_org(memberships: list[Membership], requested: UUID | None) -> Membership | None:
    """The org to sign into: the requested one, else the first enabled one.

    Never a disabled org; None for someone who belongs to no org at all.
    """
    if requested is not None:
        chosen = next((m for m in memberships if m.org.id == requested), None)
        if chosen is None:
            raise Forbidden("You are not a member of this organisation.", code="not_a_member")
        if chosen.org.disabled:
            raise Forbidden("This organisation is disabled.", code="org_disabled")
        return chosen
    enabled = [m for m in memberships if not m.org.disabled]
    if enabled:
        return enabled[0]
    if memberships:
        raise Forbidden("Every organisation you belong to is disabled.", code="org_disabled")
    return None


def user_body(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name,
            "email_verified": user.email_verified, "platform_role": user.platform_role.value,
            "disabled": user.disabled, "created_at": user.created_at}


def org_body(membership: Membership | None) -> dict[str, Any] | None:
    if membership is None:
        return None
    org = membership.org
    return {"id": org.id, "name": org.name, "disabled": org.disabled,
            "created_at": org.created_at, "org_role": membership.org_role.value}


def login_result(config: Config, user: User, membership: Membership | None,
                 session: Session) -> dict[str, Any]:
    access_token, _ = tokens.issue(config, user_id=user.id,
                                   org_id=membership.org.id if membership else None,
                                   session_id=session.id, platform_role=user.platform_role,
                                   issued_us=session.issued_us)
    return LoginResultSchema().dump({
        "access_token": access_token, "token_type": "Bearer",
        "expires_in": config.access_token_ttl_seconds,
        "user": user_body(user), "org": org_body(membership),
    })


@dataclass(frozen=True, slots=True)
class OpenedSession:
    membership: Membership | None
    session: Session
    refresh_token: str
    user: User  # as it stands once the session exists: what its tokens carry


async def open_session(request: web.Request, user: User, requested_org: UUID | None,
                       action: AuditAction, details: dict[str, Any] | None = None
                       ) -> OpenedSession:
    """Opens a session for a user whose identity is proven and audits it; the caller
    answers (the login shape, or a redirect carrying the refresh cookie).

    `user` is the row the proof was checked against. A password change, reset or wipe
    committed since then must not leave this session alive: such a change revokes the
    sessions it finds, and one created after that finds, reading the row once the session
    exists (waiting for a change under way to settle), another password hash, so the new
    session is ended here and nothing of it reaches the client."""
    app = request.app
    pool = app[keys.DB_POOL]
    async with service_tx(pool, user_id=user.id) as tx:
        membership = choose_org(await orgs.memberships_of(tx, user.id), requested_org)
    org_id = membership.org.id if membership else None
    sessions = app[keys.SESSIONS]
    session, refresh = await sessions.create(user.id, org_id, client_ip(request),
                                             user_agent(request))
    async with service_tx(pool, org_id=org_id, user_id=user.id) as tx:
        current = await users.get(tx, user.id, settled=True)
        stale = (current is None or current.disabled
                 or current.password_hash != user.password_hash)
        if not stale:
            await audit.record(tx, request, action, resource_type="session",
                               resource_id=session.id, actor_id=user.id, details=details)
    if stale or current is None:
        await sessions.revoke(session.id)
        await _login_failed(request, user, "credentials_changed")
        raise Unauthorized("Wrong email or password.", code="invalid_credentials")
    return OpenedSession(membership, session, refresh, current)


def set_refresh_cookie(response: web.StreamResponse, config: Config, token: str) -> None:
    response.set_cookie(REFRESH_COOKIE, token, max_age=config.refresh_token_ttl_seconds,
                        path=COOKIE_PATH, secure=True, httponly=True,
                        samesite=config.refresh_cookie_samesite)


def clear_refresh_cookie(response: web.StreamResponse, config: Config) -> None:
    response.del_cookie(REFRESH_COOKIE, path=COOKIE_PATH, secure=True, httponly=True,
                        samesite=config.refresh_cookie_samesite)


def refresh_token_of(request: web.Request) -> str | None:
    token = request.cookies.get(REFRESH_COOKIE)
    return token if token and len(token) <= 128 else None


def client_ip(request: web.Request) -> str:
    return request.get(keys.CLIENT_IP) or request.remote or ""


def user_agent(request: web.Request) -> str:
    return request.headers.get("User-Agent", "")[:256]


async def _login_failed(request: web.Request, user: User | None, reason: str) -> None:
    async with service_tx(request.app[keys.DB_POOL]) as tx:
        await audit.record(tx, request, AuditAction.AUTH_LOGIN_FAILED, resource_type="user",
                           resource_id=user.id if user else None,
                           actor_id=user.id if user else None,
                           details={"reason": reason})


def throttle_subject(user: User | None, email: str) -> str:
    """The login backoff's name for an account: the resolved user, else the email exactly
    as the user lookup normalises it (users.normalize_email). Never the typed spelling, or
    a fullwidth, `ß` or upper-case variant of a locked account's email would escape it."""
    return f"user:{user.id}" if user is not None else f"email:{users.normalize_email(email)}"


async def password_proves(request: web.Request, user: User | None, email: str,
                          password: str) -> bool:
    """Whether `password` is `user`'s (None: an unknown `email`, costing the same bcrypt),
    under the account's login backoff: RateLimited while it backs off; a wrong password,
    an unknown email or a disabled account counts against it, a right one clears it.
    Every handler that checks a password goes through here."""
    app = request.app
    throttle = app[keys.LOGIN_THROTTLE]
    subject = throttle_subject(user, email)
    await throttle.check(subject)
    matches = await app[keys.PASSWORDS].verify(password, user.password_hash if user else None)
    if user is None or not matches or user.disabled:
        await throttle.record_failure(subject)
    else:
        await throttle.reset(subject)
    return matches


async def check_password(request: web.Request, email: str, password: str) -> User:
    """The user whose password this is, or Unauthorized `invalid_credentials`.

    An unknown email, a wrong password and a disabled account cost the same bcrypt work
    and get the same answer. A hash of a lower cost than configured is upgraded.
    """
    app = request.app
    hasher = app[keys.PASSWORDS]
    async with service_tx(app[keys.DB_POOL]) as tx:
        user = await users.get_by_email(tx, email)
    matches = await password_proves(request, user, email, password)
    if user is None or not matches or user.disabled:
        reason = "unknown_email" if user is None else "disabled" if matches else "bad_password"
        await _login_failed(request, user, reason)
        raise Unauthorized("Wrong email or password.", code="invalid_credentials")
    if not user.email_verified:
        await _login_failed(request, user, "email_not_verified")
        raise Forbidden("Verify your email address first.", code="email_not_verified")
    assert user.password_hash is not None
    if hasher.needs_rehash(user.password_hash):
        upgraded = await hasher.hash(password)
        async with service_tx(app[keys.DB_POOL]) as tx:
            # The hash may have moved since it was read: another login's upgrade of this
            # same password (kept as it is, so the logins do not move it under one
            # another), or a change of password (the row checked stays: open_session
            # refuses the login).
            user = (await users.replace_password_hash(tx, user.id, user.password_hash,
                                                      upgraded)
                    or await _proven_now(request, tx, user.id, password) or user)
    return user


async def _proven_now(request: web.Request, tx: Tx, user_id: UUID,
                      password: str) -> User | None:
    """The user's row if `password` verifies against the hash it holds now (one that
    moved under a caller: another login's upgrade of the same password), else None."""
    moved = await users.get(tx, user_id)
    if moved is None or moved.password_hash is None:
        return None
    ok = await request.app[keys.PASSWORDS].verify(password, moved.password_hash)
    return moved if ok else None


async def replace_password(request: web.Request, tx: Tx, user: User, password: str,
                           new_hash: str) -> User | None:
    """Writes `new_hash` over the hash `password` was verified against (`user`'s). When
    that hash moved meanwhile, only over a stronger hash of the same password (a login's
    upgrade), never over another password: a reset or change committed since is not
    undone by a proof of the password it replaced. None when nothing was written."""
    assert user.password_hash is not None  # the password verified against it
    written = await users.replace_password_hash(tx, user.id, user.password_hash, new_hash)
    if written is None and (moved := await _proven_now(request, tx, user.id, password)):
        assert moved.password_hash is not None
        written = await users.replace_password_hash(tx, user.id, moved.password_hash,
                                                    new_hash)
    return written
