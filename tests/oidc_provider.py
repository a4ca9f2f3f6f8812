"""A real OpenID provider on loopback, for the SSO tests.

It serves what Google and Azure AD serve: a discovery document, a JWKS, an authorize
endpoint (remembers the PKCE challenge, the nonce and the redirect_uri, and redirects
back with a single-use code for the configured test user) and a token endpoint (checks
the client's credentials, the code, the redirect_uri and the PKCE verifier, and answers
with an RS256-signed ID token). Keys are RSA keys generated here, signed with joserfc
(authlib's JOSE library: `authlib.jose` itself is deprecated in authlib 1.9 and warns).

Flavours:
- `google`: issuer = the base URL; claims `sub`, `email`, `email_verified`, `name`.
- `azure`: the multi-tenant shape: the discovery issuer is a template
  `{base}/{tenantid}/v2.0`, each token's `iss` has its `tid` filled in; claims `tid`,
  `oid`, a pairwise `sub`, `email` (unverified) and, when asked for, `xms_edov`.

Knobs to misbehave (`audience`, `azp`, `nonce`, `sign_with`, `deny`) make the tokens an
attacker or a broken provider would hand over. Every code, token, client secret, state,
nonce and verifier that passes through is remembered by the secret scan.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from archomata.ops.devservers import free_port
from tests.secret_scan import remember

HOST = "127.0.0.2"  # loopback, but another site than the service on 127.0.0.1


def new_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": f"k-{secrets.token_hex(4)}",
                                                  "use": "sig", "alg": "RS256"},
                               private=True)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class IdpUser:
    """The person who signs in at the provider next."""

    email: str | None
    email_verified: bool | None = True   # Google's claim; None leaves it out
    name: str = "Sso Person"
    sub: str = field(default_factory=lambda: f"g-{secrets.token_hex(8)}")
    tid: str = field(default_factory=lambda: str(uuid.uuid4()))
    oid: str = field(default_factory=lambda: str(uuid.uuid4()))
    xms_edov: bool | None = None         # Azure's optional claim; None leaves it out


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str
    code_challenge: str
    user: IdpUser
    issued_at: float
    used: bool = False


class OidcProvider:
    def __init__(self, flavour: str, client_id: str, client_secret: str) -> None:
        assert flavour in {"google", "azure"}
        self.flavour = flavour
        self.client_id = client_id
        self.client_secret = client_secret
        remember(client_secret)
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.redirect_uris: set[str] = set()
        self.user = IdpUser(email=None)
        self.key = new_key()
        self.published: list[RSAKey] = [self.key]
        self.grants: dict[str, Grant] = {}
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        # Misbehaviour, off by default.
        self.audience: Any = None       # `aud` instead of our client id
        self.azp: str | None = None     # an `azp` claim
        self.nonce: str | None = None   # a `nonce` instead of the one asked for
        self.sign_with: RSAKey | None = None  # a key the JWKS does not publish
        self.deny = False               # the person refuses: error=access_denied
        self._runner: web.AppRunner | None = None

    # --- running -------------------------------------------------------------------

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/openid-configuration"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{{tenantid}}/v2.0" if self.flavour == "azure" \
            else self.base_url

    def issuer_for(self, user: IdpUser) -> str:
        return self.issuer.replace("{tenantid}", user.tid)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def rotate_key(self) -> None:
        """A new signing key; the old one leaves the JWKS at once."""
        self.key = new_key()
        self.published = [self.key]

    # --- endpoints -----------------------------------------------------------------

    async def discovery(self, request: web.Request) -> web.Response:
        self.discovery_fetches += 1
        return web.json_response({
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.base_url}/authorize",
            "token_endpoint": f"{self.base_url}/token",
            "jwks_uri": f"{self.base_url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["pairwise" if self.flavour == "azure" else "public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                      "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile"],
        })

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response(KeySet(self.published).as_dict(private=False))

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        remember(q.get("state"), q.get("nonce"))
        problems = [
            q.get("response_type") != "code" and "response_type",
            q.get("client_id") != self.client_id and "client_id",
            q.get("redirect_uri") not in self.redirect_uris and "redirect_uri",
            "openid" not in q.get("scope", "").split() and "scope",
            q.get("code_challenge_method") != "S256" and "code_challenge_method",
            not q.get("code_challenge") and "code_challenge",
            not q.get("state") and "state",
            not q.get("nonce") and "nonce",
        ]
        if any(problems):  # a provider shows such errors itself, never redirects them
            return web.Response(status=400, text=f"bad request: {[p for p in problems if p]}")
        back = {"state": q["state"]}
        if self.deny:
            back["error"] = "access_denied"
        else:
            code = secrets.token_urlsafe(24)
            remember(code)
            self.grants[code] = Grant(q["client_id"], q["redirect_uri"], q["nonce"],
                                      q["code_challenge"], self.user, time.time())
            back["code"] = code
        raise web.HTTPFound(f"{q['redirect_uri']}?{urlencode(back)}")

    def _client_authenticated(self, request: web.Request, form: Any) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return secrets.compare_digest(f"{client_id}\0{secret}",
                                      f"{self.client_id}\0{self.client_secret}")

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        remember(str(form.get("code_verifier", "")))
        if not self._client_authenticated(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.grants.get(str(form.get("code", "")))
        if (form.get("grant_type") != "authorization_code" or grant is None or grant.used
                or time.time() - grant.issued_at > 60
                or form.get("redirect_uri") != grant.redirect_uri
                or s256(str(form.get("code_verifier", ""))) != grant.code_challenge):
            return web.json_response({"error": "invalid_grant"}, status=400)
        grant.used = True
        access_token = secrets.token_urlsafe(32)
        id_token = self.id_token(grant, access_token)
        remember(access_token, id_token)
        return web.json_response({"access_token": access_token, "token_type": "Bearer",
                                  "expires_in": 3600, "scope": "openid email profile",
                                  "id_token": id_token})

    # --- tokens --------------------------------------------------------------------

    def id_token(self, grant: Grant, access_token: str) -> str:
        user, now = grant.user, int(time.time())
        at_hash = base64.urlsafe_b64encode(
            hashlib.sha256(access_token.encode()).digest()[:16]).rstrip(b"=").decode()
        claims: dict[str, Any] = {
            "iss": self.issuer_for(user), "aud": self.audience or self.client_id,
            "iat": now, "exp": now + 300, "nonce": self.nonce or grant.nonce,
            "name": user.name, "at_hash": at_hash,
        }
        if user.email is not None:
            claims["email"] = user.email
        if self.azp is not None:
            claims["azp"] = self.azp
        if self.flavour == "google":
            claims["sub"] = user.sub
            if user.email_verified is not None:
                claims["email_verified"] = user.email_verified
        else:
            claims.update(sub=f"pairwise-{user.oid[:8]}", tid=user.tid, oid=user.oid, ver="2.0")
            if user.xms_edov is not None:
                claims["xms_edov"] = user.xms_edov
        key = self.sign_with or self.key
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)
