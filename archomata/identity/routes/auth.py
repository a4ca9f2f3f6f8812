"""/auth: registration, mail links, login, refresh, logout, passwords, org switching,
sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit, keys
from archomata.access.guards import authenticated, public
from archomata.access.principal import Principal
from archomata.audit import AuditAction
from archomata.db import service_tx
from archomata.errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from archomata.identity import onboarding, signin
from archomata.identity.schemas.auth import (
    EmailOnlySchema,
    LoginResultSchema,
    LoginSchema,
    PasswordChangeSchema,
    RegisteredSchema,
    RegisterSchema,
    ResetConfirmSchema,
    SessionListSchema,
    SwitchOrgSchema,
    TokenSchema,
)
from archomata.identity.sessions import Outcome
from archomata.identity.store import mail_tokens, users
from archomata.identity.store.mail_tokens import Purpose
from archomata.identity.web import (
    clear_refresh_cookie,
    client_ip,
    door,
    login_result,
    problem,
    refresh_problem,
    refresh_token_of,
    set_refresh_cookie,
    signed_in,
    user_agent,
    user_body,
    who,
)
from archomata.orgs.store import orgs
from archomata.redis_boundary import REDIS_FAILURES
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.schemas import UserSchema

routes = web.RouteTableDef()
MAIL_COOLDOWN_SECONDS = 60
_background: set[asyncio.Task[Any]] = set()


def _later(coro: Coroutine[Any, Any, Any]) -> None:
    """Runs a mail send after the response, so its timing tells nothing."""
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _principal(request: web.Request) -> Principal:
    principal = request[keys.PRINCIPAL]
    assert principal is not None and principal.user_id is not None  # the guard ran
    return principal


@routes.post("/api/v1/auth/register")
@public
@doc("Create an account and its org", request=RegisterSchema, response=RegisteredSchema,
     status=201)
async def register(request: web.Request) -> web.Response:
    body = await load_body(request, RegisterSchema)
    app = request.app
    password_hash = await app[keys.PASSWORDS].hash(body["password"])
    account, token = await onboarding.register(
        app[keys.DB_POOL], who(request), email=body["email"], name=body["name"],
        password_hash=password_hash, org_name=body["org_name"],
        verify_ttl=app[keys.CONFIG].mail_token_ttl_seconds)
    _later(app[keys.MAILER].send_verification(account.user.email, token))
    return json_response({"user": user_body(account.user)}, status=201)


@routes.post("/api/v1/auth/verify-email")
@public
@doc("Confirm an email address with the mailed token", request=TokenSchema,
     response=UserSchema)
async def verify_email(request: web.Request) -> web.Response:
    body = await load_body(request, TokenSchema)
    async with service_tx(request.app[keys.DB_POOL]) as tx:
        user_id = await mail_tokens.consume(tx, body["token"], Purpose.VERIFY_EMAIL)
        if user_id is None:
            raise BadRequest("This link is invalid or has expired.", code="invalid_token")
        user = await users.mark_verified(tx, user_id)
        assert user is not None
        await audit.record(tx, request, AuditAction.AUTH_EMAIL_VERIFIED, resource_type="user",
                           resource_id=user.id, actor_id=user.id)
    return json_response(user_body(user))


@routes.post("/api/v1/auth/resend-verification")
@public
@doc("Send the verification mail again (202 whether or not the email exists)",
     request=EmailOnlySchema, status=202)
async def resend_verification(request: web.Request) -> web.Response:
    body = await load_body(request, EmailOnlySchema)
    app = request.app
    return await _mail_link(request, body["email"], Purpose.VERIFY_EMAIL,
                            app[keys.CONFIG].mail_token_ttl_seconds,
                            AuditAction.AUTH_EMAIL_VERIFICATION_SENT,
                            lambda user: not user.email_verified and not user.disabled,
                            app[keys.MAILER].send_verification)


async def _mail_link(request: web.Request, email: str, purpose: Purpose, ttl: int,
                     action: AuditAction, eligible: Callable[[users.User], bool],
                     send: Callable[[str, str], Coroutine[Any, Any, bool]]) -> web.Response:
    """Issues a fresh single-use link when the email's account is eligible (older links
    die), audits it, mails it after the response; answers 202 whatever the case, so the
    answer tells nothing about which emails exist."""
    token = None
    async with service_tx(request.app[keys.DB_POOL]) as tx:
        user = await users.get_by_email(tx, email)
        if user is not None and eligible(user) and await _first_mail_in_a_while(
                request, user.id, purpose):
            await mail_tokens.retire_all(tx, user.id, purpose)
            token = await mail_tokens.issue(tx, user.id, purpose, ttl)
            await audit.record(tx, request, action, resource_type="user",
                               resource_id=user.id, actor_id=user.id)
    if user is not None and token is not None:
        _later(send(user.email, token))
    return json_response({"status": "accepted"}, status=202)


async def _first_mail_in_a_while(request: web.Request, user_id: UUID, purpose: Purpose) -> bool:
    """One link per account and purpose per MAIL_COOLDOWN_SECONDS, whatever address or
    spelling of the email asks (keyed on the account), so that many IPs together cannot
    flood a mailbox; the link already sent stays good. Redis down: as before, the per-IP
    limit alone bounds it, rather than no one getting their link."""
    try:
        return bool(await request.app[keys.REDIS].set(
            f"mailed:{purpose.value}:{user_id}", 1, nx=True, ex=MAIL_COOLDOWN_SECONDS))
    except REDIS_FAILURES:  # fail open: the per-IP limit still bounds it (see above)
        return True


@routes.post("/api/v1/auth/login")
@public
@doc("Sign in with email and password", request=LoginSchema, response=LoginResultSchema)
async def login(request: web.Request) -> web.Response:
    body = await load_body(request, LoginSchema)
    try:
        opened = await signin.password_sign_in(door(request), who(request), body["email"],
                                               body["password"], body["org_id"])
    except signin.SignInRefused as exc:
        raise problem(exc) from None
    return signed_in(request.app[keys.CONFIG], opened)


@routes.post("/api/v1/auth/refresh")
@public
@doc("Rotate the refresh cookie and get a new access token", response=LoginResultSchema)
async def refresh(request: web.Request) -> web.Response:
    app = request.app
    token = refresh_token_of(request)
    if token is None:
        raise Unauthorized("No refresh cookie.", code="session_revoked")
    rotation = await app[keys.SESSIONS].rotate(token, client_ip(request), user_agent(request))
    if rotation.outcome is Outcome.REUSE:
        await _audit_reuse(request, rotation.revoked_session_id, rotation.revoked_user_id,
                           rotation.revoked_org_id, "refresh")
    if rotation.session is None or rotation.token is None:
        raise Unauthorized("This session has ended; sign in again.", code="session_revoked")
    session = rotation.session
    async with service_tx(app[keys.DB_POOL], user_id=session.user_id) as tx:
        user = await users.get(tx, session.user_id, settled=True)
        memberships = await orgs.memberships_of(tx, session.user_id)
    membership = next((m for m in memberships if m.org.id == session.org_id), None)
    ended = signin.still_signed_in(user, session.org_id, membership)
    if ended is not None:
        await app[keys.SESSIONS].revoke(session.id)
        raise refresh_problem(ended)
    assert user is not None
    response = json_response(login_result(app[keys.CONFIG], user, membership, session))
    set_refresh_cookie(response, app[keys.CONFIG], rotation.token)
    return response


async def _audit_reuse(request: web.Request, session_id: UUID | None, user_id: UUID | None,
                       org_id: UUID | None, via: str) -> None:
    """A replayed refresh token revoked its family: audited on whichever route saw it."""
    async with service_tx(request.app[keys.DB_POOL], org_id=org_id, user_id=user_id) as tx:
        await audit.record(tx, request, AuditAction.AUTH_REFRESH_REUSE_DETECTED,
                           resource_type="session", resource_id=session_id, actor_id=user_id,
                           details={"via": via})


@routes.post("/api/v1/auth/logout")
@public
@doc("End this session (refresh cookie or access token)", status=204)
async def logout(request: web.Request) -> web.Response:
    app = request.app
    principal = request[keys.PRINCIPAL]
    sid = principal.session_id if principal is not None else None
    token = refresh_token_of(request)
    ended = None
    if sid is not None or token is not None:
        # One script finds, judges and ends it: two logouts racing audit one of them.
        ended = await app[keys.SESSIONS].end(sid, token=token)
    if ended is not None and ended.stale_token:
        await _audit_reuse(request, ended.session_id, ended.user_id, ended.org_id, "logout")
    elif ended is not None:
        async with service_tx(app[keys.DB_POOL], org_id=ended.org_id,
                              user_id=ended.user_id) as tx:
            await audit.record(tx, request, AuditAction.AUTH_LOGOUT, resource_type="session",
                               resource_id=ended.session_id, actor_id=ended.user_id)
    response = web.Response(status=204)
    clear_refresh_cookie(response, app[keys.CONFIG])
    return response


@routes.post("/api/v1/auth/logout-all")
@authenticated
@doc("End every session of the caller and kill their access tokens", status=204)
async def logout_all(request: web.Request) -> web.Response:
    principal = _principal(request)
    app = request.app
    user_id = principal.actor_id
    async with service_tx(app[keys.DB_POOL], org_id=principal.org_id, user_id=user_id) as tx:
        cut = await app[keys.SESSIONS].cut_off(user_id, end_sessions=True)
        await users.set_tokens_valid_after(tx, user_id, cut)
        await audit.record(tx, request, AuditAction.AUTH_LOGOUT_ALL, resource_type="user",
                           resource_id=user_id)
    response = web.Response(status=204)
    clear_refresh_cookie(response, app[keys.CONFIG])
    return response


@routes.post("/api/v1/auth/password-reset/request")
@public
@doc("Mail a password reset link (202 whether or not the email exists)",
     request=EmailOnlySchema, status=202)
async def request_password_reset(request: web.Request) -> web.Response:
    body = await load_body(request, EmailOnlySchema)
    app = request.app
    return await _mail_link(request, body["email"], Purpose.PASSWORD_RESET,
                            app[keys.CONFIG].password_reset_ttl_seconds,
                            AuditAction.AUTH_PASSWORD_RESET_REQUESTED,
                            lambda user: not user.disabled, app[keys.MAILER].send_password_reset)


@routes.post("/api/v1/auth/password-reset/confirm")
@public
@doc("Set a new password with a reset token; every session ends", request=ResetConfirmSchema,
     status=204)
async def confirm_password_reset(request: web.Request) -> web.Response:
    body = await load_body(request, ResetConfirmSchema)
    app = request.app
    pool = app[keys.DB_POOL]
    async with service_tx(pool) as tx:
        valid = await mail_tokens.peek(tx, body["token"], Purpose.PASSWORD_RESET)
    if not valid:
        raise BadRequest("This link is invalid or has expired.", code="invalid_token")
    password_hash = await app[keys.PASSWORDS].hash(body["new_password"])
    async with service_tx(pool) as tx:
        user_id = await mail_tokens.consume(tx, body["token"], Purpose.PASSWORD_RESET)
        if user_id is None:
            raise BadRequest("This link is invalid or has expired.", code="invalid_token")
        await users.set_password_hash(tx, user_id, password_hash)
        await users.mark_verified(tx, user_id)  # the mailbox answered: the address is real
        await mail_tokens.retire_all(tx, user_id, Purpose.PASSWORD_RESET)
        cut = await app[keys.SESSIONS].cut_off(user_id, end_sessions=True)
        await users.set_tokens_valid_after(tx, user_id, cut)
        await audit.record(tx, request, AuditAction.AUTH_PASSWORD_RESET_COMPLETED,
                           resource_type="user", resource_id=user_id, actor_id=user_id)
    return web.Response(status=204)


@routes.post("/api/v1/auth/password/change")
@authenticated
@doc("Change the password; every other session ends", request=PasswordChangeSchema,
     status=204)
async def change_password(request: web.Request) -> web.Response:
    body = await load_body(request, PasswordChangeSchema)
    principal = _principal(request)
    app = request.app
    pool = app[keys.DB_POOL]
    async with service_tx(pool) as tx:
        user = await users.get(tx, principal.actor_id)
    assert user is not None
    # A stolen access token must not become a password oracle: the account's login
    # backoff counts these guesses too, and refuses them (429) while it backs off.
    if not await signin.password_proves(door(request), user, user.email,
                                        body["current_password"]):
        raise ValidationFailed("The current password is wrong.", code="invalid_current_password",
                               errors={"current_password": ["Wrong password."]})
    password_hash = await app[keys.PASSWORDS].hash(body["new_password"])
    async with service_tx(pool, org_id=principal.org_id, user_id=user.id) as tx:
        if await signin.replace_password(door(request), tx, user, body["current_password"],
                                         password_hash) is None:
            raise ValidationFailed("The current password is wrong.",
                                   code="invalid_current_password",
                                   errors={"current_password": ["Wrong password."]})
        await mail_tokens.retire_all(tx, user.id, Purpose.PASSWORD_RESET)
        await app[keys.SESSIONS].revoke_user(user.id, keep=principal.session_id)
        await audit.record(tx, request, AuditAction.AUTH_PASSWORD_CHANGED, resource_type="user",
                           resource_id=user.id)
    return web.Response(status=204)


@routes.post("/api/v1/auth/switch-org")
@authenticated
@doc("Move this session to another org the caller belongs to", request=SwitchOrgSchema,
     response=LoginResultSchema)
async def switch_org(request: web.Request) -> web.Response:
    body = await load_body(request, SwitchOrgSchema)
    principal = _principal(request)
    app = request.app
    sessions = app[keys.SESSIONS]
    async with service_tx(app[keys.DB_POOL], user_id=principal.actor_id) as tx:
        memberships = await orgs.memberships_of(tx, principal.actor_id)
    try:
        membership = signin.choose_org(memberships, body["org_id"])
    except signin.SignInRefused as exc:
        raise problem(exc) from None
    assert membership is not None and principal.session_id is not None
    token = refresh_token_of(request)
    rotation = None
    if token is not None:
        rotation = await sessions.rotate(token, client_ip(request), user_agent(request),
                                         new_org=membership.org.id, only=principal.session_id)
        if rotation.outcome is Outcome.REUSE:
            await _audit_reuse(request, rotation.revoked_session_id,
                               rotation.revoked_user_id, rotation.revoked_org_id, "switch_org")
            raise Unauthorized("This session has ended; sign in again.",
                               code="session_revoked")
    session = rotation.session if rotation is not None else None
    if session is None:  # no cookie, or one of another (or no) family: nothing to rotate
        session = await sessions.move_to_org(principal.session_id, membership.org.id)
    if session is None:
        raise Unauthorized("This session has been revoked.", code="session_revoked")
    async with service_tx(app[keys.DB_POOL], org_id=membership.org.id,
                          user_id=principal.actor_id) as tx:
        user = await users.get(tx, principal.actor_id, settled=True)
        assert user is not None
        await audit.record(tx, request, AuditAction.AUTH_ORG_SWITCHED, resource_type="org",
                           resource_id=membership.org.id,
                           details={"from_org_id": str(principal.org_id)
                                    if principal.org_id else None})
    response = json_response(login_result(app[keys.CONFIG], user, membership, session))
    if rotation is not None and rotation.token is not None:
        set_refresh_cookie(response, app[keys.CONFIG], rotation.token)
    return response


def _timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@routes.get("/api/v1/auth/sessions")
@authenticated
@doc("The caller's sessions", response=SessionListSchema)
async def list_sessions(request: web.Request) -> web.Response:
    principal = _principal(request)
    sessions = await request.app[keys.SESSIONS].list_for_user(principal.actor_id)
    items = [{"id": s.id, "created_at": _timestamp(s.created_at),
              "last_used_at": _timestamp(s.last_used_at), "ip": s.ip,
              "user_agent": s.user_agent, "current": s.id == principal.session_id}
             for s in sessions if s.expires_at > time.time()]
    return json_response({"items": items})


@routes.delete("/api/v1/auth/sessions/{session_id}")
@authenticated
@doc("End one of the caller's sessions", status=204)
async def delete_session(request: web.Request) -> web.Response:
    principal = _principal(request)
    app = request.app
    try:
        sid = UUID(request.match_info["session_id"])
    except ValueError:
        raise NotFound("No such session.") from None
    if await app[keys.SESSIONS].end(sid, owner=principal.actor_id) is None:
        raise NotFound("No such session.")
    async with service_tx(app[keys.DB_POOL], org_id=principal.org_id,
                          user_id=principal.actor_id) as tx:
        await audit.record(tx, request, AuditAction.AUTH_SESSION_REVOKED,
                           resource_type="session", resource_id=sid)
    return web.Response(status=204)

