"""/auth: registration, mail links, login, refresh, logout, passwords, org switching,
sessions. The handlers parse and answer; the flows are in archomata.identity.service
(and the sign-in in archomata.identity.signin)."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import keys
from archomata.access import caller
from archomata.access.guards import authenticated, public
from archomata.access.route_policy import ENDS_A_SESSION, RateClass
from archomata.errors import NotFound, RateLimited, Unauthorized
from archomata.identity import onboarding, service, signin, tokens
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
from archomata.identity.schemas.mfa import MfaRequiredSchema
from archomata.identity.service import MailLink
from archomata.identity.web import (
    clear_refresh_cookie,
    mfa_required,
    problem,
    reception,
    refresh_problem,
    refresh_token_of,
    renewed_response,
    signed_in,
    user_body,
    who,
)
from archomata.metrics import METRICS
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc
from archomata.web.schemas import UserSchema

routes = web.RouteTableDef()







@routes.post("/api/v1/auth/register")
@public
@doc("Create an account and its org, and mail its verification link. An email that has "
     "an account gets the same 201 (its `user.id` names no account) and its owner a mail "
     "saying someone tried: the answer never tells whether an address exists",
     request=RegisterSchema, response=RegisteredSchema, status=201)
async def register(request: web.Request) -> web.Response:
    body = await load_body(request, RegisterSchema)
    app = request.app
    password_hash = await app[keys.PASSWORDS].hash(body["password"])
    asked = onboarding.registration(email=body["email"], name=body["name"],
                                    org_name=body["org_name"], password_hash=password_hash)
    # Whether the address has an account is found out after the answer, never before it.
    app[keys.LATER].run(onboarding.register(
        app[keys.DB_POOL], app[keys.REDIS], app[keys.MAILER], who(request), asked,
        app[keys.CONFIG].mail_token_ttl_seconds), "register")
    # The account is reached at /me once signed in; the same for an address that has one.
    return json_response({"user": user_body(asked.user)}, status=201, location="/api/v1/me")


@routes.post("/api/v1/auth/verify-email")
@public
@doc("Confirm an email address with the mailed token", request=TokenSchema,
     response=UserSchema)
async def verify_email(request: web.Request) -> web.Response:
    body = await load_body(request, TokenSchema)
    user = await service.verify_email(reception(request), who(request), body["token"])
    return json_response(user_body(user))


async def _mail_link(request: web.Request, link: MailLink,
                     send: Callable[[str, str], Coroutine[Any, Any, bool]]) -> web.Response:
    """202 whatever the case; the account's lookup, its link and the mail all come after
    the answer, so the answer and its timing tell nothing about which emails exist."""
    body = await load_body(request, EmailOnlySchema)
    request.app[keys.LATER].run(service.mail_link(
        reception(request), request.app[keys.REDIS], who(request), body["email"], link, send),
        link.purpose.value)
    return json_response({"status": "accepted"}, status=202)


@routes.post("/api/v1/auth/resend-verification")
@public
@doc("Send the verification mail again (202 whether or not the email exists)",
     request=EmailOnlySchema, status=202)
async def resend_verification(request: web.Request) -> web.Response:
    app = request.app
    return await _mail_link(
        request, service.verification_link(app[keys.CONFIG].mail_token_ttl_seconds),
        app[keys.MAILER].send_verification)


@routes.post("/api/v1/auth/login")
@public
@doc("Sign in with email and password; someone with a second factor gets "
     "`{mfa_required, mfa_token, methods}` instead (answered at /api/v1/auth/mfa/verify)",
     request=LoginSchema, response=(LoginResultSchema, MfaRequiredSchema))
async def login(request: web.Request) -> web.Response:
    body = await load_body(request, LoginSchema)
    count = request.app[METRICS].logins
    try:
        opened = await signin.password_sign_in(reception(request), who(request), body["email"],
                                               body["password"], body["org_id"])
    except signin.SignInRefused as exc:
        count(exc.reason.value)
        raise problem(exc) from None
    except RateLimited:
        count("throttled")  # the account's backoff (the per-IP limit refuses before)
        raise
    if isinstance(opened, signin.SecondFactorRequired):
        count("second_factor_required")
        return mfa_required(opened)
    count("success")
    return signed_in(request.app[keys.CONFIG], opened)


NO_REFRESH_COOKIE = (
    "No refresh cookie came with this request. A browser sends the cookie only to the site "
    "that set it: call /api/v1/auth/login and /api/v1/auth/refresh on the same host "
    "(localhost and 127.0.0.1 are different sites), with credentials included.")


@routes.post("/api/v1/auth/refresh")
@public(rate=RateClass.REFRESH)
@doc("Rotate the refresh cookie and get a new access token", response=LoginResultSchema)
async def refresh(request: web.Request) -> web.Response:
    token = refresh_token_of(request)
    if token is None:
        # The contract's code (API.md §3), with what a newcomer needs: the cookie went
        # to another site (the SPA on localhost, the API called as 127.0.0.1).
        raise Unauthorized(NO_REFRESH_COOKIE, code="session_revoked")
    try:
        renewed = await service.refresh(reception(request), who(request), token)
    except signin.SignInRefused as exc:
        raise refresh_problem(exc.reason) from None
    return renewed_response(request, renewed)


@routes.post("/api/v1/auth/logout")
@public(**ENDS_A_SESSION)
@doc("End this session (refresh cookie or access token)", status=204)
async def logout(request: web.Request) -> web.Response:
    principal = caller.caller_if_any(request)
    sid, owner = (principal.session_id, principal.actor_id) if principal is not None \
        else _signed_session(request)
    await service.logout(reception(request), who(request), sid, owner, refresh_token_of(request))
    response = web.Response(status=204)
    clear_refresh_cookie(response, request.app[keys.CONFIG])
    return response


def _signed_session(request: web.Request) -> tuple[UUID | None, UUID | None]:
    """The session and person an access token this service signed names, even one the
    revocation check refused: Redis may have ended a family PostgreSQL still holds live
    (a Redis-first end of before, a Redis behind), and the logout must still reach
    PostgreSQL. The signature proves the caller held a token of that session."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None, None
    try:
        claims = tokens.verify(request.app[keys.CONFIG], token.strip())
    except Unauthorized:
        return None, None
    return claims.session_id, claims.user_id


@routes.post("/api/v1/auth/logout-all")
@authenticated(**ENDS_A_SESSION)
@doc("End every session of the caller and kill their access tokens", status=204)
async def logout_all(request: web.Request) -> web.Response:
    await service.logout_all(reception(request), who(request), caller.person(request))
    response = web.Response(status=204)
    clear_refresh_cookie(response, request.app[keys.CONFIG])
    return response


@routes.post("/api/v1/auth/password-reset/request")
@public
@doc("Mail a password reset link (202 whether or not the email exists)",
     request=EmailOnlySchema, status=202)
async def request_password_reset(request: web.Request) -> web.Response:
    app = request.app
    return await _mail_link(
        request, service.reset_link(app[keys.CONFIG].password_reset_ttl_seconds),
        app[keys.MAILER].send_password_reset)


@routes.post("/api/v1/auth/password-reset/confirm")
@public
@doc("Set a new password with a reset token; every session ends", request=ResetConfirmSchema,
     status=204)
async def confirm_password_reset(request: web.Request) -> web.Response:
    body = await load_body(request, ResetConfirmSchema)
    await service.confirm_password_reset(reception(request), who(request), body["token"],
                                         body["new_password"])
    return web.Response(status=204)


@routes.post("/api/v1/auth/password/change")
@authenticated
@doc("Change the password; every other session ends", request=PasswordChangeSchema,
     status=204)
async def change_password(request: web.Request) -> web.Response:
    body = await load_body(request, PasswordChangeSchema)
    await service.change_password(reception(request), who(request), caller.person(request),
                                  body["current_password"], body["new_password"])
    return web.Response(status=204)


@routes.post("/api/v1/auth/switch-org")
@authenticated(rate=RateClass.REFRESH)
@doc("Move this session to another org the caller belongs to", request=SwitchOrgSchema,
     response=LoginResultSchema)
async def switch_org(request: web.Request) -> web.Response:
    body = await load_body(request, SwitchOrgSchema)
    try:
        renewed = await service.switch_org(reception(request), who(request), caller.person(request),
                                           refresh_token_of(request), body["org_id"])
    except signin.SignInRefused as exc:
        raise problem(exc) from None
    return renewed_response(request, renewed)


def _timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@routes.get("/api/v1/auth/sessions")
@authenticated
@doc("The caller's sessions", response=SessionListSchema)
async def list_sessions(request: web.Request) -> web.Response:
    me = caller.person(request)
    sessions = await request.app[keys.SESSIONS].list_for_user(me.user_id)
    items = [{"id": s.id, "created_at": _timestamp(s.created_at),
              "last_used_at": _timestamp(s.last_used_at), "ip": s.ip,
              "user_agent": s.user_agent, "current": s.id == me.session_id}
             for s in sessions if s.expires_at > time.time()]
    return json_response({"items": items})


@routes.delete("/api/v1/auth/sessions/{session_id}")
@authenticated(**ENDS_A_SESSION)
@doc("End one of the caller's sessions", status=204)
async def delete_session(request: web.Request) -> web.Response:
    try:
        sid = UUID(request.match_info["session_id"])
    except ValueError:
        raise NotFound("No such session.") from None
    await service.delete_session(reception(request), who(request), caller.person(request), sid)
    return web.Response(status=204)
