"""Access tokens: HS256 JWTs signed with the first configured key, verified by `kid`.

Only HS256 is accepted: the algorithm list is fixed, so `alg: none` or an asymmetric
algorithm confusion cannot slip through; `iss`, `aud`, `exp`, `iat` are required.

`iat` is whole seconds on this instance's clock, too coarse to tell a token minted just
after a revocation from one minted just before it in the same second; `iat_us` is the
issue instant the revocation check compares (sessions.py: microseconds on the session
store's clock, never before the user's last cut-off).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import jwt

from archomata.access.principal import PlatformRole
from archomata.config import Config
from archomata.errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "archomata"
AUDIENCE = "archomata-api"
REQUIRED_CLAIMS = ["sub", "sid", "iat", "exp", "jti", "iss", "aud", "prole"]


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: UUID
    org_id: UUID | None
    session_id: UUID
    platform_role: PlatformRole
    issued_at: int
    expires_at: int
    token_id: str
    issued_us: int
    mfa_at: int | None = None  # when the session's second factor was proven (step-up)


def issue(config: Config, *, user_id: UUID, org_id: UUID | None, session_id: UUID,
          platform_role: PlatformRole, issued_us: int, amr: str = "pwd",
          mfa_at: float | None = None, now: float | None = None) -> tuple[str, Claims]:
    """`amr` and `mfa_at` are the session's: a refreshed token carries them on."""
    issued = int(now if now is not None else time.time())
    proven = int(mfa_at) if mfa_at is not None else None
    claims = Claims(user_id, org_id, session_id, platform_role, issued,
                    issued + config.access_token_ttl_seconds, uuid.uuid4().hex, issued_us,
                    proven)
    kid, secret = config.signing_key
    payload = {
        "sub": str(user_id), "org": str(org_id) if org_id else None, "sid": str(session_id),
        "prole": platform_role.value, "iat": claims.issued_at, "exp": claims.expires_at,
        "jti": claims.token_id, "iss": ISSUER, "aud": AUDIENCE, "iat_us": issued_us,
        "amr": amr.split(","),
    }
    if proven is not None:
        payload["mfa_at"] = proven
    token = jwt.encode(payload, secret.reveal().encode(), algorithm=ALGORITHM,
                       headers={"kid": kid})
    return token, claims


def _invalid(detail: str = "The access token is invalid.") -> Unauthorized:
    return Unauthorized(detail, code="token_invalid")


def verify(config: Config, token: str) -> Claims:
    """The token's claims, or Unauthorized (`token_invalid` / `token_expired`)."""
    if not token.isascii():  # see VerifiedTokens.verify
        raise _invalid()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid() from None
    keys = dict(config.jwt_secrets)
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str) or kid not in keys:
        raise _invalid()
    try:
        payload = jwt.decode(token, keys[kid].reveal().encode(), algorithms=[ALGORITHM],
                             audience=AUDIENCE, issuer=ISSUER,
                             options={"require": REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The access token has expired.", code="token_expired") from None
    except jwt.PyJWTError:
        raise _invalid() from None
    try:
        org = payload.get("org")
        # A token minted before iat_us existed counts from the start of its second: at
        # worst it dies with a cut later in that second, never outlives an earlier one.
        issued_us = payload.get("iat_us", int(payload["iat"]) * 1_000_000)
        mfa_at = payload.get("mfa_at")
        if not isinstance(issued_us, int) or isinstance(issued_us, bool) or not (
                mfa_at is None or (isinstance(mfa_at, int) and not isinstance(mfa_at, bool))):
            raise _invalid()
        return Claims(UUID(payload["sub"]), UUID(org) if org else None, UUID(payload["sid"]),
                      PlatformRole(payload["prole"]), int(payload["iat"]),
                      int(payload["exp"]), str(payload["jti"]), issued_us, mfa_at)
    except (ValueError, TypeError, KeyError):
        raise _invalid() from None


class VerifiedTokens:
    """The claims of access tokens this instance has already verified, keyed by the
    token's SHA-256, so the same token on a client's next request skips PyJWT's parse
    and signature check (about a tenth of an authorised request's CPU, measured).

    Only what `verify` accepted is kept; expiry is checked again on every use (an expired
    entry goes back through `verify`, which answers `token_expired`); revocation is not
    this cache's business (the authenticator asks Redis on every request). The keys are
    fixed for the process's life, so a claim verified once stays verified. Bounded: past
    `max_entries` the oldest entry goes.
    """

    def __init__(self, config: Config, *, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._max_entries = max_entries
        self._clock = clock
        self._claims: dict[bytes, Claims] = {}

    def verify(self, token: str) -> Claims:
        # A JWT is ASCII; a header's undecodable bytes arrive as lone surrogates, which
        # str.encode refuses with an error of its own (a 500 once).
        if not token.isascii():
            raise _invalid()
        digest = hashlib.sha256(token.encode()).digest()
        claims = self._claims.get(digest)
        if claims is not None and self._clock() < claims.expires_at:
            return claims
        self._claims.pop(digest, None)
        claims = verify(self._config, token)  # raises for anything it does not accept
        if len(self._claims) >= self._max_entries:
            del self._claims[next(iter(self._claims))]  # dicts keep insertion order
        self._claims[digest] = claims
        return claims
