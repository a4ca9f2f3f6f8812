"""The second factor over HTTP: answering a sign-in's challenge, enrolling a TOTP
authenticator, and what the caller has (archomata.identity.mfa.service holds the flows)."""

from __future__ import annotations

from aiohttp import web

from archomata import audit, keys
from archomata.access import caller
from archomata.access.guards import authenticated, public
from archomata.access.step_up import step_up, step_up_exempt
from archomata.identity.mfa import service
from archomata.identity.schemas.auth import LoginResultSchema
from archomata.identity.schemas.mfa import (
    CodeSchema,
    CurrentPasswordSchema,
    MfaStatusSchema,
    MfaVerifySchema,
    RecoveryCodesSchema,
    StepUpSchema,
    TotpStartedSchema,
)
from archomata.identity.signin import SignInRefused
from archomata.identity.web import (
    problem,
    reception,
    refresh_token_of,
    renewed_response,
    second_factor_counted,
    signed_in,
    who,
)
from archomata.web.json_io import json_response, load_body
from archomata.web.openapi import doc

routes = web.RouteTableDef()

# What every second-factor answer may meet (archomata.identity.mfa.throttle).
_ANSWER_PROBLEMS = {
    401: "`invalid_mfa_code`: wrong, used already, or not six ASCII digits (counted)",
    429: "`rate_limited`: the account's wrong answers impose a wait, or its login backoff "
         "does (Retry-After); the answer was not judged",
    503: "`service_unavailable`: the counter cannot be read, and the answer was not judged; "
         "`secret_unavailable`: the stored secret does not open (the operator is told)",
}


@routes.post("/api/v1/auth/mfa/verify")
@public
@doc("Answer a sign-in's second-factor challenge; what its way in changes (an invitation "
     "joined, an SSO identity linked) is made with the proven code, or, no longer "
     "possible, answers 400 invalid_token", request=MfaVerifySchema,
     response=LoginResultSchema, problems=_ANSWER_PROBLEMS)
async def verify(request: web.Request) -> web.Response:
    body = await load_body(request, MfaVerifySchema)
    try:
        with second_factor_counted(request):
            opened = await service.verify_challenge(
                reception(request), request.app[keys.DATA_KEYS], who(request),
                body["mfa_token"], body.get("code"), body.get("recovery_code"))
    except SignInRefused as exc:
        raise problem(exc) from None
    return signed_in(request.app[keys.CONFIG], opened)


@routes.get("/api/v1/me/mfa")
@authenticated
@doc("The caller's second factors", response=MfaStatusSchema)
async def get_status(request: web.Request) -> web.Response:
    found = await service.status(caller.person(request))
    return json_response(MfaStatusSchema().dump({
        "totp": {"enabled": found.confirmed_at is not None,
                 "confirmed_at": found.confirmed_at},
        "recovery_codes_left": found.recovery_codes_left}))


@routes.post("/api/v1/me/mfa/totp")
@authenticated
@step_up_exempt("it asks the password, and replaces only an unconfirmed secret")
@doc("Start enrolling a TOTP authenticator (inactive until confirmed)",
     request=CurrentPasswordSchema, response=TotpStartedSchema)
async def start_totp(request: web.Request) -> web.Response:
    body = await load_body(request, CurrentPasswordSchema)
    secret, uri = await service.start_totp(reception(request), request.app[keys.DATA_KEYS],
                                           caller.person(request), body["current_password"])
    return json_response(TotpStartedSchema().dump({"secret": secret, "otpauth_uri": uri}))


@routes.post("/api/v1/me/mfa/totp/confirm")
@authenticated
@step_up_exempt("the first code of the enrolment is its own proof")
@doc("Confirm the authenticator with its first code; returns the recovery codes once",
     request=CodeSchema, response=RecoveryCodesSchema, problems=_ANSWER_PROBLEMS)
async def confirm_totp(request: web.Request) -> web.Response:
    body = await load_body(request, CodeSchema)
    recovery = await service.confirm_totp(reception(request), request.app[keys.DATA_KEYS],
                                          audit.context_of(request), caller.person(request),
                                          body["code"])
    return json_response(RecoveryCodesSchema().dump({"recovery_codes": recovery}))


@routes.post("/api/v1/auth/step-up")
@authenticated
@doc("Prove the second factor again: a token with a fresh `mfa_at` (the cookie rotates "
     "too), for the routes that ask for a recent one", request=StepUpSchema,
     response=LoginResultSchema, problems=_ANSWER_PROBLEMS)
async def step_up_session(request: web.Request) -> web.Response:
    body = await load_body(request, StepUpSchema)
    with second_factor_counted(request):
        renewed = await service.step_up(reception(request), request.app[keys.DATA_KEYS],
                                        audit.context_of(request), caller.person(request),
                                        refresh_token_of(request), body.get("code"),
                                        body.get("recovery_code"))
    return renewed_response(request, renewed)


@routes.delete("/api/v1/me/mfa/totp")
@authenticated
@step_up
@doc("Turn the second factor off; its recovery codes die with it", status=204)
async def disable_totp(request: web.Request) -> web.Response:
    await service.disable_totp(reception(request), audit.context_of(request),
                               caller.person(request))
    return web.Response(status=204)


@routes.post("/api/v1/me/mfa/recovery-codes")
@authenticated
@step_up
@doc("Ten new recovery codes, shown once; the old ones die", response=RecoveryCodesSchema)
async def regenerate_recovery_codes(request: web.Request) -> web.Response:
    recovery = await service.regenerate_recovery_codes(audit.context_of(request),
                                                       caller.person(request))
    return json_response(RecoveryCodesSchema().dump({"recovery_codes": recovery}))
