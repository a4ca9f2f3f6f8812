"""Single sign-on with OpenID Connect providers (Google, Azure AD): the protocol half.

authlib does the protocol: the authorization URL (`prepare_grant_uri`), PKCE S256
(`create_s256_code_challenge`), client authentication at the token endpoint
(`ClientAuth`), and the ID token checks (`authlib.oidc.core.CodeIDToken`, on joserfc,
authlib's JOSE library: signature, `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, `at_hash`).
What this module adds is what authlib leaves to its caller:

- discovery and JWKS are fetched once and cached; a token naming a `kid` the cached set
  does not hold makes one fetch of the JWKS again (the provider rotated its keys), at
  most once a minute per provider, however many such tokens arrive at once or one after
  another: anyone can send a callback with a made-up `kid`, and each must not cost the
  provider (and us) a fetch;
- `aud` must be exactly our client id. authlib on its own only insists when `azp` is
  absent: a token for another audience whose `azp` names us would pass;
- only asymmetric algorithms the provider announces are accepted (never `none`, never
  an HMAC keyed with something public);
- each provider's flavour: Google keys the person on `sub` and vouches for the email
  with `email_verified`; Azure AD keys on `tid` + `oid` (its `email` is mutable and
  unverified, the nOAuth attack), vouches for the email's domain only with the optional
  `xms_edov` claim, and announces a templated issuer (`.../{tenantid}/v2.0`).

Nothing here logs or raises a code, token, verifier or client secret: an `SsoError`
carries a stable `code` for the browser and a `reason` for the audit log, no more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from archomata.config import Config, SsoProvider
from archomata.text_rules import NOT_SINGLE_LINE, text_problem

log = logging.getLogger(__name__)

SCOPE = "openid email profile"
METADATA_TTL_SECONDS = 3600
JWKS_TTL_SECONDS = 3600
JWKS_REFETCH_SECONDS = 60.0  # the least time between two fetches for an unknown kid
HTTP_TIMEOUT_SECONDS = 10.0
MAX_DOCUMENT_BYTES = 512 * 1024
CLOCK_LEEWAY_SECONDS = 60
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "ES512", "EdDSA"})
GOOGLE_BARE_ISSUER = "accounts.google.com"  # Google signs some tokens with the bare host
AZURE_TENANT_PLACEHOLDER = "{tenantid}"


class SsoError(Exception):
    """A sign-in that did not happen. `code` goes to the browser
    (`/login?error=<code>`), `reason` to the audit log; neither ever holds a secret."""

    def __init__(self, code: str, reason: str, user_id: UUID | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.user_id = user_id  # the account concerned, when one is known


@dataclass(frozen=True, slots=True)
class Assertion:
    """Who the provider says signed in, once every check passed."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str


def asserted(value: Any) -> bool:
    """True only for a claim that says yes (some providers send booleans as strings)."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in {"true", "1"}


def _text_claim(claims: dict[str, Any], name: str, max_length: int = 255) -> str | None:
    """A single-line claim under the text rules (archomata.text_rules), else None: a
    provider's text reaches the database and mail headers as a client's would."""
    value = claims.get(name)
    if isinstance(value, str) and 0 < len(value.strip()) <= max_length \
            and text_problem(value, multiline=False) is None:
        return value.strip()
    return None


def _display_name(claims: dict[str, Any]) -> str | None:
    """The `name` claim with any line break or control character made a space: a display
    name the person typed at their provider is theirs, not a reason to refuse them."""
    value = claims.get("name")
    if not isinstance(value, str):
        return None
    return _text_claim({"name": " ".join(NOT_SINGLE_LINE.sub(" ", value).split())}, "name",
                       200)


@dataclass(frozen=True, slots=True)
class Flavour:
    """What differs between providers: the stable key of a person, and which claim
    vouches for their email."""

    subject: Callable[[dict[str, Any]], str | None]
    email_verified: Callable[[dict[str, Any]], bool]


def _google_subject(claims: dict[str, Any]) -> str | None:
    return _text_claim(claims, "sub")


def _azure_subject(claims: dict[str, Any]) -> str | None:
    # `sub` is pairwise per application and `email` is whatever the tenant typed: the
    # tenant and the object id together name the person.
    tid, oid = _text_claim(claims, "tid", 64), _text_claim(claims, "oid", 64)
    return f"{tid}:{oid}" if tid and oid else None


FLAVOURS: dict[str, Flavour] = {
    "google": Flavour(_google_subject, lambda c: asserted(c.get("email_verified"))),
    "azure": Flavour(_azure_subject, lambda c: asserted(c.get("xms_edov"))),
}


def _issuer_option(issuer: str) -> dict[str, Any]:
    if AZURE_TENANT_PLACEHOLDER in issuer:
        # Azure's multi-tenant discovery announces a template; the token's own `tid`
        # fills it, so a token from tenant A cannot claim tenant B's issuer.
        def same_tenant(claims: Any, value: Any) -> bool:
            tid = claims.get("tid")
            return isinstance(tid, str) and bool(tid) and \
                value == issuer.replace(AZURE_TENANT_PLACEHOLDER, tid)
        return {"essential": True, "validate": same_tenant}
    accepted = [issuer]
    if issuer == f"https://{GOOGLE_BARE_ISSUER}":
        accepted.append(GOOGLE_BARE_ISSUER)
    return {"essential": True, "values": accepted}


def _audience_option(client_id: str) -> dict[str, Any]:
    # Exactly us: a single audience that is our client id. Not "any list holding us"
    # (a token minted for several parties), not "azp names us" (authlib's default).
    def only_us(_claims: Any, value: Any) -> bool:
        return bool(value == client_id or value == [client_id])
    return {"essential": True, "value": client_id, "validate": only_us}


class OidcClient:
    """One configured provider: cached discovery and keys, and the three protocol steps."""

    def __init__(self, provider: SsoProvider, redirect_uri: str) -> None:
        self.provider = provider
        self.name = provider.name
        self.redirect_uri = redirect_uri
        self.flavour = FLAVOURS[provider.name]
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._keys_generation = 0
        self._refetched_at: float | None = None  # the last fetch for an unknown kid
        self._lock = asyncio.Lock()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                    total=HTTP_TIMEOUT_SECONDS)) as http, http.get(url) as response:
                body = await _read_limited(response)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SsoError("sso_unavailable", "provider_unreachable") from exc
        return _document(status, body, "provider_document")

    async def metadata(self) -> dict[str, Any]:
        """The discovery document, fetched at most once an hour."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < \
                METADATA_TTL_SECONDS:
            return self._metadata
        async with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at >= \
                    METADATA_TTL_SECONDS:
                document = await self._get_json(self.provider.metadata_url)
                missing = [k for k in ("issuer", "authorization_endpoint", "token_endpoint",
                                       "jwks_uri") if not isinstance(document.get(k), str)]
                if missing:
                    raise SsoError("sso_unavailable", "provider_metadata_incomplete")
                self._metadata, self._metadata_at = document, time.monotonic()
        return self._metadata

    def _may_refetch(self, stale: int | None) -> bool:
        """Whether a token that lacked a key in generation `stale` gets a fetch: not when
        another request fetched since, nor within a minute of the last such fetch."""
        return stale == self._keys_generation and (
            self._refetched_at is None
            or time.monotonic() - self._refetched_at >= JWKS_REFETCH_SECONDS)

    async def _key_set(self, stale: int | None = None) -> tuple[KeySet, int]:
        """The provider's keys and their generation. `stale` is a generation that lacked
        a key: fetched again unless another request already did, or one did less than a
        minute ago (single flight: the others wait on the lock and find it done)."""
        fresh = self._keys is not None and time.monotonic() - self._keys_at < JWKS_TTL_SECONDS
        if fresh and not self._may_refetch(stale):
            assert self._keys is not None
            return self._keys, self._keys_generation
        metadata = await self.metadata()
        async with self._lock:
            current = self._keys is not None and \
                time.monotonic() - self._keys_at < JWKS_TTL_SECONDS
            if not current or self._may_refetch(stale):
                if current:  # counted tried or not: a provider that fails is not hammered
                    self._refetched_at = time.monotonic()
                document = await self._get_json(metadata["jwks_uri"])
                try:
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
                except (JoseError, KeyError, TypeError, ValueError) as exc:
                    raise SsoError("sso_unavailable", "provider_jwks_invalid") from exc
                self._keys_at = time.monotonic()
                self._keys_generation += 1
            assert self._keys is not None
            return self._keys, self._keys_generation

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        metadata = await self.metadata()
        uri: str = prepare_grant_uri(
            metadata["authorization_endpoint"], self.provider.client_id, "code",
            redirect_uri=self.redirect_uri, scope=SCOPE, state=state, nonce=nonce,
            # types-Authlib leaves these two helpers untyped.
            code_challenge=create_s256_code_challenge(code_verifier),  # type: ignore[no-untyped-call]
            code_challenge_method="S256")
        return uri

    async def exchange(self, code: str, code_verifier: str) -> dict[str, Any]:
        """The token endpoint's answer for `code`. Only its status is ever reported."""
        metadata = await self.metadata()
        body = prepare_token_request("authorization_code", code=code,
                                     redirect_uri=self.redirect_uri,
                                     code_verifier=code_verifier)
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        auth = ClientAuth(self.provider.client_id, self.provider.client_secret.reveal(),
                          _auth_method(metadata))
        uri, headers, body = auth.prepare(  # type: ignore[no-untyped-call]
            "POST", metadata["token_endpoint"], headers, body)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                    total=HTTP_TIMEOUT_SECONDS)) as http, http.post(
                        uri, data=body, headers=headers, allow_redirects=False) as response:
                raw = await _read_limited(response)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SsoError("sso_unavailable", "token_endpoint_unreachable") from exc
        token = _document(status, raw, "token_endpoint")
        if not isinstance(token.get("id_token"), str):
            raise SsoError("sso_failed", "token_response_without_id_token")
        return token

    async def validate_id_token(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        """The claims of the ID token in `token`, every check done by authlib/joserfc."""
        metadata = await self.metadata()
        algorithms = [a for a in metadata.get("id_token_signing_alg_values_supported")
                      or ["RS256"] if a in ASYMMETRIC_ALGORITHMS] or ["RS256"]
        keys, generation = await self._key_set()
        try:
            try:
                decoded = jwt.decode(token["id_token"], keys, algorithms=algorithms)
            except InvalidKeyIdError:
                keys, _ = await self._key_set(stale=generation)
                decoded = jwt.decode(token["id_token"], keys, algorithms=algorithms)
            options = {"iss": _issuer_option(metadata["issuer"]),
                       "aud": _audience_option(self.provider.client_id),
                       "sub": {"essential": True}, "exp": {"essential": True},
                       "nonce": {"essential": True}}
            params = {"nonce": nonce, "client_id": self.provider.client_id,
                      "access_token": token.get("access_token")}
            claims = CodeIDToken(decoded.claims, decoded.header, options, params)
            claims.validate(leeway=CLOCK_LEEWAY_SECONDS)
        except JoseError as exc:
            raise SsoError("sso_failed", f"invalid_id_token:{_jose_reason(exc)}") from exc
        except (TypeError, ValueError) as exc:
            raise SsoError("sso_failed", "invalid_id_token:malformed") from exc
        return dict(claims)

    async def sign_in(self, code: str, code_verifier: str, nonce: str) -> Assertion:
        """Exchanges the code and turns the validated ID token into an Assertion."""
        claims = await self.validate_id_token(await self.exchange(code, code_verifier), nonce)
        subject = self.flavour.subject(claims)
        if subject is None:
            raise SsoError("sso_failed", "invalid_id_token:subject_missing")
        email = _text_claim(claims, "email", 254)
        name = _display_name(claims) or (email.split("@")[0] if email else None)
        return Assertion(self.name, subject, email,
                         email is not None and self.flavour.email_verified(claims),
                         (name or "Single sign-on user")[:200])


def _auth_method(metadata: dict[str, Any]) -> str:
    supported = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in supported:
        return "client_secret_basic"
    if "client_secret_post" in supported:
        return "client_secret_post"
    raise SsoError("sso_unavailable", "no_supported_client_auth_method")


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The body, or its first MAX_DOCUMENT_BYTES + 1 bytes: enough to know it is too big."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            break
    return bytes(body)


def _document(status: int, body: bytes, what: str) -> dict[str, Any]:
    """A JSON object from a provider, or SsoError naming `what` and the status only."""
    if status != 200:
        raise SsoError("sso_failed" if what == "token_endpoint" else "sso_unavailable",
                       f"{what}_status_{status}")
    if len(body) > MAX_DOCUMENT_BYTES:
        raise SsoError("sso_unavailable", f"{what}_too_large")
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SsoError("sso_unavailable", f"{what}_not_json") from exc
    if not isinstance(document, dict):
        raise SsoError("sso_unavailable", f"{what}_not_json")
    return document


def _jose_reason(exc: JoseError) -> str:
    """The failed check, from joserfc's error name and claim (e.g. `invalid_claim:aud`),
    never the token."""
    reason = getattr(exc, "error", None) or type(exc).__name__
    claim = getattr(exc, "claim", None)
    text = f"{reason}:{claim}" if isinstance(claim, str) else str(reason)
    return "".join(c for c in text if c.isalnum() or c in "_:,")[:80]


class SsoClients:
    """The configured providers of one app, by name."""

    def __init__(self, config: Config) -> None:
        self.clients = {
            p.name: OidcClient(p, f"{config.public_url}/api/v1/auth/sso/{p.name}/callback")
            for p in config.sso_providers if p.name in FLAVOURS}

    def get(self, name: str) -> OidcClient | None:
        return self.clients.get(name)
