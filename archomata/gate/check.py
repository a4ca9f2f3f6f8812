"""The gate's one call: a request's rate limit, its token's revocation and the caller's
cached permissions, read by one Redis script.

    rv:ready:v2         set once the revocation state was rebuilt from PostgreSQL
                        (archomata.identity.revocation): until then nothing is judged
    sess:{sid}          the session: gone means revoked
    rv:user:{uid}       hash: disabled (1), cut (access tokens whose `iat_us` is below it
                        are dead: microseconds on Redis's clock)
    rv:org:{org}        the org is disabled
    perm:{org}:{uid}    the permission cache (archomata.gate.authz), tagged with the
                        org's permission version read in the snapshot it was loaded from
    permv:{org}         the org's permission version: an entry tagged older is stale

The people's authenticator (archomata.identity.authenticator) runs GATE; the agents'
(archomata.bridge.api_keys) its own script on the same start (OPTIONAL_HIT). Both go
through `call_gate`, which counts the request's rate limit in the same call: the target
is the one the pipeline put in `keys.RATE_TARGET` (archomata.http.middlewares), the
decision goes back in `keys.RATE_DECISION` for the rate-limit middleware.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import orjson
from aiohttp import web
from redis.commands.core import AsyncScript

from archomata import keys
from archomata.errors import Unauthorized
from archomata.gate.authz import Authz
from archomata.gate.ratelimit import OPTIONAL_HIT, PendingHit, optional_hit_call
from archomata.redis_boundary import REDIS_FAILURES, unavailable

# v2: cut-offs became microseconds under a new field; a new name makes the first instance
# of this version rebuild them from PostgreSQL instead of trusting the old ones.
READY = "rv:ready:v2"
# Raised on a server that may lack writes (server_watch.py): its next rebuild also ends the
# families PostgreSQL has ended, which an empty Redis has no need of.
STALE = "rv:stale"
IPV6_PREFIX = 64


class Token(Protocol):
    """What the gate reads of a verified access token (archomata.identity.tokens.Claims)."""

    @property
    def user_id(self) -> UUID: ...
    @property
    def org_id(self) -> UUID | None: ...
    @property
    def session_id(self) -> UUID: ...
    @property
    def issued_us(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CheckResult:
    ready: bool
    authz: Authz | None
    authz_version: int
    cached_authz_stale: bool


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# One script per authenticated request: the rate-limit hit when the request is limited,
# then every read the revocation check needs, so redis-py packs and parses one command
# (measured: 40% less client CPU than the same in a four-command pipeline).
# KEYS: [the rate-limit bucket,] rv:ready, sess:{sid}, rv:user:{uid}
#       [, rv:org:{org}, perm:{org}:{uid}, permv:{org}] for a token with an org.
# ARGV: the limit and its window in ms, or two empty strings when not limited.
# Returns {rate reply or false, ready, session, disabled, cut[, org, authz, authzv]}.
GATE = OPTIONAL_HIT + """
local user = redis.call('HMGET', KEYS[first + 2], 'disabled', 'cut')
local reply = {rate, redis.call('EXISTS', KEYS[first]), redis.call('EXISTS', KEYS[first + 1]),
               user[1], user[2]}
if #KEYS > first + 2 then
  reply[6] = redis.call('EXISTS', KEYS[first + 3])
  reply[7] = redis.call('GET', KEYS[first + 4])
  reply[8] = redis.call('GET', KEYS[first + 5])
end
return reply
"""


def gate_keys(claims: Token) -> list[str]:
    """GATE's own KEYS for `claims` (the rate-limit bucket, if any, goes before them)."""
    keys = [READY, f"sess:{claims.session_id}", f"rv:user:{claims.user_id}"]
    if claims.org_id is not None:
        keys += [f"rv:org:{claims.org_id}", f"perm:{claims.org_id}:{claims.user_id}",
                 f"permv:{claims.org_id}"]
    return keys


def judge(claims: Token, reply: Sequence[Any]) -> CheckResult:
    """Raises Unauthorized for a revoked token; else says what the cache holds. `reply`
    is GATE's, without its first element (the rate limit's)."""
    ready, session, disabled, cut, *org = reply
    if not ready:
        return CheckResult(False, None, 0, True)
    if not session:
        raise Unauthorized("This session has been revoked.", code="session_revoked")
    if disabled:
        raise Unauthorized("This account is disabled.", code="user_disabled")
    if cut is not None and claims.issued_us < int(_text(cut)):
        raise Unauthorized("This token has been revoked.", code="token_revoked")
    if claims.org_id is None:
        return CheckResult(True, None, 0, False)
    org_disabled, cached_raw, version_raw = org
    if org_disabled:
        raise Unauthorized("This organisation is disabled.", code="org_disabled")
    version = int(_text(version_raw)) if version_raw is not None else 0
    cached = orjson.loads(cached_raw) if cached_raw is not None else None
    # Older than a change Redis has heard of: stale. Newer (Redis lost the raise of a
    # change that committed, a replica behind): what it says was read after that change.
    if cached is None or int(cached.get("v", 0)) < version:
        return CheckResult(True, None, version, True)
    if not cached.get("member"):
        raise Unauthorized("You are no longer a member of this organisation.",
                           code="membership_revoked")
    return CheckResult(True, Authz(cached["role"], frozenset(cached["perms"]),
                                   bool(cached.get("mfa"))), version, False)


def client_bucket(request: web.Request) -> str:
    """The client as the limits count it: its address, or its /64 for IPv6."""
    return _bucket(request.get(keys.CLIENT_IP) or request.remote or "unknown")


def _bucket(client_ip: str) -> str:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return client_ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


async def call_gate(script: AsyncScript, request: web.Request | None, own_keys: list[str],
                    *, refuse_now: bool = False, extra_args: list[Any] | None = None
                    ) -> list[Any]:
    """Runs a Redis script that starts with OPTIONAL_HIT (archomata.gate.ratelimit),
    counting `request`'s rate limit in the same call (none when `request` is None or not
    limited: `keys.RATE_TARGET`, which the authn middleware sets), and returns the
    script's own reply. The decision goes to `request[keys.RATE_DECISION]` for the
    middleware below; with `refuse_now` a refusal is
    raised here, before the caller spends anything on the request. If Redis fails, the
    decision comes from memory and ServiceUnavailable is raised: the callers check
    revocation with the reply, so without it no credential passes (fail closed)."""
    target = request.get(keys.RATE_TARGET) if request is not None else None
    limiter = request.app.get(keys.RATE_LIMITER) if request is not None else None
    if limiter is None:
        target = None
    script_keys, args = optional_hit_call(target, own_keys)
    args += extra_args or []  # the script's own ARGV, from ARGV[3]
    failure: BaseException | None = None
    try:
        reply = await script(keys=script_keys, args=args)
    except REDIS_FAILURES as exc:  # the rate limit first, from memory; then the 503
        failure, reply = exc, [exc]
    if request is not None and limiter is not None and target is not None:
        decision = limiter.result_from(PendingHit(*target), reply[0])
        request[keys.RATE_DECISION] = decision
        if refuse_now:
            decision.raise_if_refused()
    if failure is not None:
        raise unavailable() from failure
    return list(reply[1:])
