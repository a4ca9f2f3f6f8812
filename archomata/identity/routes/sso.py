"""/auth/sso: signing in with Google or Azure AD (OpenID Connect, authorization code flow
with PKCE S256). Both routes are browser navigations, so both answer with redirects:
to the provider, to `{FRONTEND_URL}{next}` with the refresh cookie set (the SPA then calls
/auth/refresh), or to `{FRONTEND_URL}/login?error=<code>`. The one exception is a
provider that is not configured: 404, as for any unknown route.

The callback's flow is archomata.identity.sso_signin. Every outcome is audited:
`auth.sso.login` for a session opened, `auth.sso.linked` for an identity linked
(archomata.identity.linking), `auth.login.failed` with `method: sso` and a reason for a
refusal. No code, token, state or verifier is ever logged, audited or shown.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode
from weakref import WeakKeyDictionary

import asyncpg
from aiohttp import web

from archomata import audit, keys
from archomata.access.guards import public
from archomata.audit import AuditAction
from archomata.config import Config
from archomata.db import service_tx
from archomata.errors import ApiError, NotFound
from archomata.identity.oidc import OidcClient, SsoClients, SsoError
from archomata.identity.schemas.sso import SsoCallbackQuerySchema, SsoLoginQuerySchema
from archomata.identity.signin import Reason, SecondFactorRequired, SignInRefused, sso_details
from archomata.identity.sso_signin import Callback, sso_sign_in
from archomata.identity.sso_state import STATE_TTL_SECONDS, LoginStates, new_login, safe_next
from archomata.identity.web import reception, set_refresh_cookie, who
from archomata.web.openapi import doc

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

BINDING_COOKIE = "archomata_sso"
BINDING_PATH = "/api/v1/auth/sso"

# The provider clients cache discovery and keys for as long as their app lives, and hold
# no open connection, so they are made on first use and need no cleanup.
_CLIENTS: WeakKeyDictionary[web.Application, SsoClients] = WeakKeyDictionary()


def _client(request: web.Request) -> OidcClient:
    app = request.app
    clients = _CLIENTS.get(app)
    if clients is None:
        clients = _CLIENTS[app] = SsoClients(app[keys.CONFIG])
    client = clients.get(request.match_info["provider"])
    if client is None:  # not a provider we know, or one without a client id: off
        raise NotFound("No such sign-in provider.")
    return client


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _to_login_page(config: Config, code: str) -> web.Response:
    return _redirect(f"{config.frontend_url}/login?error={code}")


def _refusal(exc: Exception, provider: str) -> SsoError:
    if isinstance(exc, SsoError):
        return exc
    if isinstance(exc, ApiError):  # a dependency down, say: its stable code
        return SsoError(exc.code, f"api_error:{exc.code}")
    log.exception("SSO sign-in failed unexpectedly", extra={"provider": provider})
    return SsoError("server_error", "internal_error")


def _code_of(refused: SignInRefused) -> str:
    """A refusal of the sign-in as the login page hears it: after the provider
    proved who it is, a disabled account may say so."""
    if refused.reason is Reason.CREDENTIALS_CHANGED:
        return "invalid_credentials"
    if refused.reason is Reason.EVERY_ORG_DISABLED:
        return "org_disabled"
    return refused.reason.value


async def _audit_refusal(request: web.Request, provider: str, refusal: SsoError) -> None:
    details = {**sso_details(provider), "reason": refusal.reason}
    try:
        async with service_tx(request.app[keys.DB_POOL]) as tx:
            # No token names anyone yet: the refused account, when known, is the actor.
            await audit.record(tx, audit.context_of(request).or_user(refusal.user_id),
                               AuditAction.AUTH_LOGIN_FAILED,
                               resource_type="user" if refusal.user_id else None,
                               resource_id=refusal.user_id, details=details)
    except (ApiError, asyncpg.PostgresError, OSError):
        # The refusal stands whether or not its entry could be written (database down).
        log.warning("SSO refusal not audited", extra={"provider": provider,
                                                      "reason": refusal.reason})


@routes.get("/api/v1/auth/sso/{provider}/login")
@public
@doc("Sign in with Google or Azure AD: 302 to the provider (state, nonce, PKCE S256); "
     "404 for a provider that is not configured", query=SsoLoginQuerySchema, status=302)
async def sso_login(request: web.Request) -> web.Response:
    client = _client(request)
    config = request.app[keys.CONFIG]
    try:
        login = new_login(client.name, safe_next(request.query.get("next")))
        url = await client.authorization_url(state=login.state, nonce=login.pending.nonce,
                                             code_verifier=login.pending.code_verifier)
        await LoginStates(request.app[keys.REDIS]).put(login.state, login.pending)
    except Exception as exc:  # a navigation: the login page with a code, never a trace
        refusal = _refusal(exc, client.name)
        await _audit_refusal(request, client.name, refusal)
        return _to_login_page(config, refusal.code)
    response = _redirect(url)
    # Lax, not Strict: the cookie must come back on the provider's cross-site redirect.
    response.set_cookie(BINDING_COOKIE, login.binding_cookie, max_age=STATE_TTL_SECONDS,
                        path=BINDING_PATH, secure=True, httponly=True, samesite="Lax")
    return response


@routes.get("/api/v1/auth/sso/{provider}/callback")
@public
@doc("The provider's way back: 302 to the frontend with the refresh cookie set, or to "
     "`/login?error=<code>`", query=SsoCallbackQuerySchema, status=302)
async def sso_callback(request: web.Request) -> web.Response:
    client = _client(request)
    try:
        response = await _complete(request, client)
    except SignInRefused as refused:  # audited by the sign-in
        response = _to_login_page(request.app[keys.CONFIG], _code_of(refused))
    except Exception as exc:  # a navigation: the login page with a code, never a trace
        refusal = _refusal(exc, client.name)
        await _audit_refusal(request, client.name, refusal)
        response = _to_login_page(request.app[keys.CONFIG], refusal.code)
    response.del_cookie(BINDING_COOKIE, path=BINDING_PATH, secure=True, httponly=True,
                        samesite="Lax")
    return response


async def _complete(request: web.Request, client: OidcClient) -> web.Response:
    query, config = request.query, request.app[keys.CONFIG]
    callback = Callback(query.get("state"), query.get("code"), query.get("error"),
                        request.cookies.get(BINDING_COOKIE))
    returned = await sso_sign_in(reception(request), who(request), client, callback,
                                 allow_signup=config.sso_allow_signup)
    if isinstance(returned.outcome, SecondFactorRequired):  # the SPA asks for the code
        return _redirect(f"{config.frontend_url}/login/mfa?"
                         f"{urlencode({'mfa_token': returned.outcome.mfa_token})}")
    response = _redirect(f"{config.frontend_url}{returned.next}")
    set_refresh_cookie(response, config, returned.outcome.refresh_token)
    return response
