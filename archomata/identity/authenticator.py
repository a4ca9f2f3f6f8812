"""From a verified access token to a Principal: one Redis call in the steady state
(rate limit, revocation and the permission cache together), PostgreSQL only on a cache
miss."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from archomata.access.principal import ActorType, Principal
from archomata.config import Config
from archomata.errors import ServiceUnavailable, Unauthorized
from archomata.gate import authz
from archomata.gate.check import GATE, CheckResult, call_gate, gate_keys, judge
from archomata.identity import tokens
from archomata.identity.revocation import Revocation
from archomata.identity.tokens import Claims
from archomata.tenancy.org_role import OrgRole

log = logging.getLogger(__name__)


class Authenticator:
    def __init__(self, config: Config, redis: Redis, pool: asyncpg.Pool,
                 revocation: Revocation) -> None:
        self.config = config
        self.redis = redis
        self.pool = pool
        self.revocation = revocation
        self._rebuilding: asyncio.Lock = asyncio.Lock()
        self._tokens = tokens.VerifiedTokens(config)
        self._gate = redis.register_script(GATE)  # EVALSHA, loading it again if flushed

    async def principal(self, request: web.Request, token: str) -> Principal:
        claims = self._tokens.verify(token)
        result = await self._check(claims, request)
        if not result.ready:
            async with self._rebuilding:
                await self.revocation.rebuild()
            result = await self._check(claims)
            if not result.ready:
                raise ServiceUnavailable("Revocation state is being rebuilt; retry.")
        if claims.org_id is None:
            return Principal(ActorType.USER, claims.user_id, None, claims.session_id,
                             claims.platform_role, mfa_at=claims.mfa_at)
        access = result.authz
        if access is None:
            access, version = await authz.load(self.pool, claims.org_id, claims.user_id)
            await self.revocation.cache_authz(claims.org_id, claims.user_id, version, access)
            if access is None:
                raise Unauthorized("You are no longer a member of this organisation.",
                                   code="membership_revoked")
        return Principal(ActorType.USER, claims.user_id, claims.org_id, claims.session_id,
                         claims.platform_role, OrgRole(access.org_role), access.permissions,
                         claims.mfa_at, access.org_requires_mfa)

    async def _check(self, claims: Claims, request: web.Request | None = None) -> CheckResult:
        """Revocation and the permission cache in one script call, with the request's rate
        limit folded in (its decision is left for the rate-limit middleware)."""
        return judge(claims, await call_gate(self._gate, request, gate_keys(claims)))


# This component's app key: beside its class, not in archomata.keys (which says why).
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
