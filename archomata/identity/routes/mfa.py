"""The second factor over HTTP: answering a sign-in's challenge, enrolling a TOTP
authenticator, and what the caller has (archomata.identity.mfa.service holds the flows)."""

from __future__ import annotations

from aiohttp import web

from archomata import audit, keys
from archomata.access.guards import authenticated, public
from archomata.identity.mfa import service
from archomata.identity.schemas.auth import LoginResultSchema
from archomata.identity.schemas.mfa import (
    CodeSchema,
    CurrentPasswordSchema,
    MfaStatusSchema,
    MfaVerifySchema,
    RecoveryCodesSchema,
    TotpStartedSchema,
)
from archomata.identity.signin import SignInRefused
from archomata.identity.web import door, me_of, problem, signed_in, who
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc

routes = web.RouteTableDef()


@routes.post("/api/v1/auth/mfa/verify")
@public
@doc("Answer a sign-in's second-factor challenge", request=MfaVerifySchema,
     response=LoginResultSchema)
async def verify(request: web.Request) -> web.Response:
    body = await load_body(request, MfaVerifySchema)
    try:
        opened = await service.verify_challenge(
            door(request), request.app[keys.DATA_KEYS], who(request), body["mfa_token"],
            body.get("code"), body.get("recovery_code"))
    except SignInRefused as exc:
        raise problem(exc) from None
    return signed_in(request.app[keys.CONFIG], opened)


@routes.get("/api/v1/me/mfa")
@authenticated
@doc("The caller's second factors", response=MfaStatusSchema)
async def get_status(request: web.Request) -> web.Response:
    found = await service.status(me_of(request))
    return json_response(MfaStatusSchema().dump({
        "totp": {"enabled": found.confirmed_at is not None,
                 "confirmed_at": found.confirmed_at},
        "recovery_codes_left": found.recovery_codes_left}))


@routes.post("/api/v1/me/mfa/totp")
@authenticated
@doc("Start enrolling a TOTP authenticator (inactive until confirmed)",
     request=CurrentPasswordSchema, response=TotpStartedSchema)
async def start_totp(request: web.Request) -> web.Response:
    body = await load_body(request, CurrentPasswordSchema)
    secret, uri = await service.start_totp(door(request), request.app[keys.DATA_KEYS],
                                           me_of(request), body["current_password"])
    return json_response(TotpStartedSchema().dump({"secret": secret, "otpauth_uri": uri}))


@routes.post("/api/v1/me/mfa/totp/confirm")
@authenticated
@doc("Confirm the authenticator with its first code; returns the recovery codes once",
     request=CodeSchema, response=RecoveryCodesSchema)
async def confirm_totp(request: web.Request) -> web.Response:
    body = await load_body(request, CodeSchema)
    recovery = await service.confirm_totp(door(request), request.app[keys.DATA_KEYS],
                                          audit.context_of(request), me_of(request),
                                          body["code"])
    return json_response(RecoveryCodesSchema().dump({"recovery_codes": recovery}))
