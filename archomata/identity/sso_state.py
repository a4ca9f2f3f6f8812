"""What one SSO sign-in remembers between leaving for the provider and coming back.

    sso:state:{sha256(state)}   JSON {provider, nonce, code_verifier, next, binding},
                                10 minutes, taken with GETDEL: single use

`binding` is the SHA-256 of a random value the browser holds in the `archomata_sso`
cookie (HttpOnly, Secure, SameSite=Lax: a Strict cookie would not come back on the
provider's cross-site redirect). A state is honoured only in the browser it was issued
to, so nobody can finish their own sign-in in someone else's browser (login CSRF).

`next` is where the SPA goes afterwards: only a path of the frontend is accepted, so the
callback can never be made to send a freshly signed-in browser elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from redis.asyncio import Redis

from archomata.identity.oidc import SsoError
from archomata.redis_boundary import redis_call

STATE_TTL_SECONDS = 600
MAX_NEXT_LENGTH = 1024
DEFAULT_NEXT = "/"
# A path, query and fragment of RFC 3986 characters only: no backslash, no whitespace,
# no control or non-ASCII characters a browser might "fix" into something else.
_NEXT_CHARS = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?#]*")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def safe_next(value: str | None) -> str:
    """`value` when it is a relative path of the frontend, else SsoError `invalid_next`.

    Refused: absolute URLs and schemes (`https://evil`, `javascript:`), scheme-relative
    `//evil`, `/\\evil` (which browsers read as `//evil`), and anything with characters
    outside the URL alphabet.
    """
    if value is None or value == "":
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if (len(value) > MAX_NEXT_LENGTH or not _NEXT_CHARS.fullmatch(value)
            or value.startswith("//") or parts.scheme or parts.netloc):
        raise SsoError("invalid_next", "next_not_a_frontend_path")
    return value


@dataclass(frozen=True, slots=True)
class PendingLogin:
    provider: str
    nonce: str
    code_verifier: str
    next: str
    binding: str  # sha256 of the browser's binding cookie

    def bound_to(self, cookie: str | None) -> bool:
        # Ours is ASCII; a cookie's undecodable bytes (lone surrogates) would fail encode().
        return cookie is not None and cookie.isascii() and hmac.compare_digest(
            _digest(cookie), self.binding)


@dataclass(frozen=True, slots=True)
class NewLogin:
    """A fresh sign-in: what goes to the provider, what goes to the browser's cookie, and
    what stays in Redis."""

    state: str
    binding_cookie: str
    pending: PendingLogin


def new_login(provider: str, next_path: str) -> NewLogin:
    binding = secrets.token_urlsafe(32)
    pending = PendingLogin(provider=provider, nonce=secrets.token_urlsafe(32),
                           code_verifier=secrets.token_urlsafe(48), next=next_path,
                           binding=_digest(binding))
    return NewLogin(secrets.token_urlsafe(32), binding, pending)


class LoginStates:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def put(self, state: str, pending: PendingLogin) -> None:
        with redis_call():
            await self.redis.set(f"sso:state:{_digest(state)}", json.dumps(asdict(pending)),
                                 ex=STATE_TTL_SECONDS, nx=True)

    async def take(self, state: str) -> PendingLogin | None:
        """The sign-in `state` belongs to, removed in the same step: a second callback
        with it finds nothing."""
        if not state or len(state) > 256:
            return None
        with redis_call():
            raw = await self.redis.getdel(f"sso:state:{_digest(state)}")
        if raw is None:
            return None
        return PendingLogin(**json.loads(raw))
