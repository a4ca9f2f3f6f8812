"""The web side of signing in: the sign-in's collaborators taken from a request,
a refused sign-in as the JSON routes answer it, the login shape with its access token,
and the refresh cookie that carries the session. The sign-in rules themselves are in
archomata.identity.signin."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from archomata import audit, keys
from archomata.audit import AuditContext
from archomata.config import Config
from archomata.errors import ApiError, Forbidden, RateLimited, Unauthorized
from archomata.identity import tokens
from archomata.identity.reception import Reception
from archomata.identity.schemas.auth import LoginResultSchema
from archomata.identity.schemas.mfa import MfaRequiredSchema
from archomata.identity.service import Renewed
from archomata.identity.signin import Opened, Reason, SecondFactorRequired, SignInRefused
from archomata.identity.store.session_rows import Session
from archomata.identity.store.users import User
from archomata.metrics import METRICS
from archomata.tenancy.orgs import Membership
from archomata.web.json_io import json_response

REFRESH_COOKIE = "archomata_refresh"
COOKIE_PATH = "/api/v1/auth"


def user_body(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name,
            "email_verified": user.email_verified, "platform_role": user.platform_role.value,
            "disabled": user.disabled, "created_at": user.created_at}


def org_body(membership: Membership | None) -> dict[str, Any] | None:
    if membership is None:
        return None
    org = membership.org
    return {"id": org.id, "name": org.name, "disabled": org.disabled,
            "created_at": org.created_at, "require_mfa": org.require_mfa,
            "org_role": membership.org_role.value}


def login_result(config: Config, user: User, membership: Membership | None,
                 session: Session) -> dict[str, Any]:
    access_token, _ = tokens.issue(config, user_id=user.id,
                                   org_id=membership.org.id if membership else None,
                                   session_id=session.id, platform_role=user.platform_role,
                                   issued_us=session.issued_us, amr=session.amr,
                                   mfa_at=session.mfa_at)
    result: dict[str, Any] = LoginResultSchema().dump({
        "access_token": access_token, "token_type": "Bearer",
        "expires_in": config.access_token_ttl_seconds,
        "user": user_body(user), "org": org_body(membership),
    })
    return result


def renewed_response(request: web.Request, renewed: Renewed) -> web.Response:
    """The login shape of a session carried on, with its rotated cookie if it has one."""
    config = request.app[keys.CONFIG]
    response = json_response(login_result(config, renewed.user, renewed.membership,
                                          renewed.session))
    if renewed.refresh_token is not None:
        set_refresh_cookie(response, config, renewed.refresh_token)
    return response


def set_refresh_cookie(response: web.StreamResponse, config: Config, token: str) -> None:
    response.set_cookie(REFRESH_COOKIE, token, max_age=config.refresh_token_ttl_seconds,
                        path=COOKIE_PATH, secure=True, httponly=True,
                        samesite=config.refresh_cookie_samesite)


def clear_refresh_cookie(response: web.StreamResponse, config: Config) -> None:
    response.del_cookie(REFRESH_COOKIE, path=COOKIE_PATH, secure=True, httponly=True,
                        samesite=config.refresh_cookie_samesite)


def refresh_token_of(request: web.Request) -> str | None:
    token = request.cookies.get(REFRESH_COOKIE)
    # Ours are short and ASCII; anything else is no cookie of ours (and a header's
    # undecodable bytes, lone surrogates, would fail the hashing with a 500).
    return token if token and len(token) <= 128 and token.isascii() else None


def reception(request: web.Request) -> Reception:
    """The sign-in's collaborators (its Reception), as this app holds them."""
    app = request.app
    return Reception(app[keys.DB_POOL], app[keys.SESSIONS], app[keys.PASSWORDS],
                     app[keys.LOGIN_THROTTLE])


def who(request: web.Request) -> AuditContext:
    """Who asks to sign in, and from where, as the sign-in's sessions and entries record it."""
    return audit.context_of(request)


_WRONG = ("Wrong email or password.", "invalid_credentials")
_PROBLEMS: dict[Reason, tuple[type[ApiError], str, str]] = {
    # An account's state is no one's business until its password is proven: a disabled
    # account, or a password that moved, answers as a wrong password does.
    Reason.UNKNOWN_EMAIL: (Unauthorized, *_WRONG),
    Reason.BAD_PASSWORD: (Unauthorized, *_WRONG),
    Reason.USER_DISABLED: (Unauthorized, *_WRONG),
    Reason.CREDENTIALS_CHANGED: (Unauthorized, *_WRONG),
    Reason.EMAIL_NOT_VERIFIED: (Forbidden, "Verify your email address first.",
                                "email_not_verified"),
    Reason.NOT_A_MEMBER: (Forbidden, "You are not a member of this organisation.",
                          "not_a_member"),
    Reason.ORG_DISABLED: (Forbidden, "This organisation is disabled.", "org_disabled"),
    Reason.EVERY_ORG_DISABLED: (Forbidden, "Every organisation you belong to is disabled.",
                                "org_disabled"),
    Reason.MEMBERSHIP_REVOKED: (Forbidden, "You are not a member of this organisation.",
                                "not_a_member"),
}


def problem(refused: SignInRefused) -> ApiError:
    """A refused sign-in as the JSON routes answer it (login, invitation, org switch)."""
    error, detail, code = _PROBLEMS[refused.reason]
    return error(detail, code=code)


_ENDED: dict[Reason, str] = {
    Reason.USER_DISABLED: "This account is disabled.",
    Reason.MEMBERSHIP_REVOKED: "You are no longer a member of this organisation.",
    Reason.ORG_DISABLED: "This organisation is disabled.",
}


def refresh_problem(reason: Reason) -> Unauthorized:
    """A session that no longer meets signin.service.still_signed_in, as refresh says it."""
    return Unauthorized(_ENDED[reason], code=reason.value)


def mfa_required(challenge: SecondFactorRequired) -> web.Response:
    """The answer of a JSON way in for a user with a second factor: no token, no cookie."""
    return json_response(MfaRequiredSchema().dump({
        "mfa_required": True, "mfa_token": challenge.mfa_token,
        "methods": list(challenge.METHODS)}))


def signed_in(config: Config, opened: Opened) -> web.Response:
    """The login shape, with the refresh cookie of the session opened."""
    response = json_response(login_result(config, opened.user, opened.membership,
                                          opened.session))
    set_refresh_cookie(response, config, opened.refresh_token)
    return response


# A second-factor answer's refusals by their code: the rest (a malformed body, a session
# gone) judged no answer and is not counted.
_ANSWER_CODES = {"invalid_mfa_code": "wrong", "invalid_token": "expired"}


@contextlib.contextmanager
def second_factor_counted(request: web.Request) -> Iterator[None]:
    """Counts the second-factor answer the block judges, by outcome (archomata.metrics)."""
    count = request.app[METRICS].second_factor_answers
    try:
        yield
    except SignInRefused:
        count("refused")  # a right answer, and the sign-in's rules refuse it after
        raise
    except RateLimited:
        count("throttled")
        raise
    except ApiError as exc:
        if (outcome := _ANSWER_CODES.get(exc.code or "")) is not None:
            count(outcome)
        raise
    count("right")
