"""The typed keys of the app and of a request.

This module is a leaf: it imports only modules that never import it back, so the
foundations (db, guards, metrics, the middlewares) read their keys here without a cycle.
The components built on those foundations (they open transactions, run the rate-limit
gate) keep their app key beside their class, typed by it: `REVOCATION`
(identity.revocation), `AUTHENTICATOR` (identity.authenticator), `API_KEYS`
(bridge.api_keys) and `METRICS` (metrics). Typing them here would import them, and
through them db and this module again. So do the keys of the pipeline's and the guards'
own parts: `AUTHENTICATORS` (http.middlewares.authn), `ROUTE_POLICIES`
(access.route_policy) and `HAS_FACTOR` (access.step_up).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from archomata.config import Config, RateLimit

if TYPE_CHECKING:
    from archomata.access.principal import Principal
    from archomata.audit.export_slots import ExportSlots
    from archomata.audit.search_gate import SearchGate
    from archomata.bridge.broadcast import Broadcast
    from archomata.crypto import DataKeys
    from archomata.gate.ratelimit import RateDecision, RateLimiter
    from archomata.identity.login_throttle import LoginThrottle
    from archomata.identity.passwords import PasswordHasher
    from archomata.identity.sessions import SessionStore
    from archomata.mail import Mailer
    from archomata.web.later import Later

CONFIG = web.AppKey("config", Config)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
# Turns for the pool's connections, first come first served (see db._scoped_tx).
DB_TURNS = web.AppKey("db_turns", asyncio.Semaphore)
REDIS = web.AppKey("redis", Redis)
EXPECTED_SCHEMA_VERSION = web.AppKey("expected_schema_version", int)
# Set when the process stops taking work (SIGTERM): readiness answers 503, long polls end.
STOPPING = web.AppKey("stopping", asyncio.Event)
OPENAPI = web.AppKey("openapi", dict)
PASSWORDS: web.AppKey[PasswordHasher] = web.AppKey("passwords")
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions")
MAILER: web.AppKey[Mailer] = web.AppKey("mailer")
DATA_KEYS: web.AppKey[DataKeys] = web.AppKey("data_keys")
BROADCAST: web.AppKey[Broadcast] = web.AppKey("broadcast")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
LOGIN_THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("login_throttle")
EXPORTS: web.AppKey[ExportSlots] = web.AppKey("exports")
# Work the public /auth routes leave for after their answer (archomata.web.later).
LATER: web.AppKey[Later] = web.AppKey("later")
AUDIT_SEARCHES: web.AppKey[SearchGate] = web.AppKey("audit_searches")

REQUEST_ID = web.RequestKey("request_id", str)
CLIENT_IP = web.RequestKey("client_ip", str)
PRINCIPAL: web.RequestKey[Principal | None] = web.RequestKey("principal")
# This request's rate-limit bucket and limit (None: not limited), set by the authn
# middleware for the gate its authenticators call (archomata.gate.check.call_gate).
RATE_TARGET: web.RequestKey[tuple[str, RateLimit] | None] = web.RequestKey("rate_target")
# A rate-limit decision already made for this request (e.g. by authn, in its own Redis
# pipeline): the rate-limit middleware then uses it instead of asking Redis again.
RATE_DECISION: web.RequestKey[RateDecision] = web.RequestKey("rate_decision")

