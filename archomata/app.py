"""The application factory: middlewares (outermost first), resources, routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import ModuleType

from aiohttp import web
from redis.asyncio import Redis

from archomata import db, keys, migrations
from archomata.broadcast import Broadcast
from archomata.config import Config
from archomata.cors import setup_cors
from archomata.exports import ExportSlots
from archomata.guards import policy_problems, unguarded_api_routes
from archomata.handlers import (
    accounts,
    admin,
    agents,
    audit_logs,
    auth,
    bridge,
    groups,
    health,
    identities,
    invitations,
    me,
    orders,
    org,
    roles,
    sso,
    strategies,
)
from archomata.mail import Mailer
from archomata.metrics import Metrics, metrics_middleware
from archomata.middlewares.access_log import access_log_middleware
from archomata.middlewares.authn import authn_middleware
from archomata.middlewares.body_limit import body_limit_middleware
from archomata.middlewares.client_ip import client_ip_middleware
from archomata.middlewares.csrf import csrf_middleware
from archomata.middlewares.errors import errors_middleware
from archomata.middlewares.ratelimit import ratelimit_middleware
from archomata.middlewares.request_id import request_id_middleware
from archomata.middlewares.security_headers import (
    on_response_prepare,
    security_headers_middleware,
)
from archomata.middlewares.timeout import timeout_middleware
from archomata.openapi import build_spec
from archomata.security.api_keys import ApiKeyAuthenticator
from archomata.security.authenticator import Authenticator
from archomata.security.crypto import DataKeys
from archomata.security.login_throttle import LoginThrottle
from archomata.security.passwords import PasswordHasher
from archomata.security.ratelimit import RateLimiter
from archomata.security.revocation import Revocation
from archomata.security.sessions import SessionStore
from archomata.web import route_policy

log = logging.getLogger(__name__)

ROUTE_MODULES: tuple[ModuleType, ...] = (
    health, auth, invitations, me, admin, org, roles, groups,
    audit_logs,
    agents, accounts, orders, strategies, bridge,
    sso, identities,
)


class SchemaOutdatedError(RuntimeError):
    """The database schema is older than this code: run `archomata migrate`."""


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    pool = await db.create_pool(config.database_url.reveal(), config)
    try:
        async with pool.acquire() as conn:
            version = await migrations.current_version(conn)
        expected = app[keys.EXPECTED_SCHEMA_VERSION]
        if version is None or version < expected:
            raise SchemaOutdatedError(
                f"database schema is at version {version or 0} but this code needs {expected}: "
                "run `archomata migrate` first")
    except BaseException:
        await pool.close()
        raise
    app[keys.DB_POOL] = pool
    app[keys.DB_TURNS] = asyncio.Semaphore(config.db_pool_max)
    yield
    await pool.close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    client = Redis.from_url(app[keys.CONFIG].redis_url.reveal(), socket_timeout=2,
                            socket_connect_timeout=2, health_check_interval=30)
    app[keys.REDIS] = client
    yield
    await client.aclose()


async def _security(app: web.Application) -> AsyncIterator[None]:
    config, redis, pool = app[keys.CONFIG], app[keys.REDIS], app[keys.DB_POOL]
    hasher = PasswordHasher(config.bcrypt_rounds, config.bcrypt_threads,
                            config.bcrypt_queue)
    revocation = Revocation(redis, pool)
    app[keys.PASSWORDS] = hasher
    app[keys.SESSIONS] = SessionStore(redis, config)
    app[keys.REVOCATION] = revocation
    app[keys.AUTHENTICATOR] = Authenticator(config, redis, pool, revocation)
    app[keys.MAILER] = Mailer(config)
    yield
    hasher.close()


async def _rate_limits(app: web.Application) -> AsyncIterator[None]:
    config, redis = app[keys.CONFIG], app[keys.REDIS]
    on_fallback = app[keys.METRICS].ratelimit_fallback.inc
    app[keys.RATE_LIMITER] = RateLimiter(redis, on_fallback=on_fallback)
    app[keys.LOGIN_THROTTLE] = LoginThrottle(
        redis, free_failures=config.login_backoff_after,
        max_seconds=config.login_backoff_max_seconds, on_fallback=on_fallback)
    app[keys.EXPORTS] = ExportSlots(redis, config.exports_per_instance)
    yield


async def _bridge(app: web.Application) -> AsyncIterator[None]:
    """Secrets at rest, agent API keys, and this instance's pub/sub listener."""
    config, redis = app[keys.CONFIG], app[keys.REDIS]
    app[keys.DATA_KEYS] = DataKeys(config.data_key.reveal(),
                                   [k.reveal() for k in config.data_key_previous])
    api_keys = ApiKeyAuthenticator(redis, app[keys.DB_POOL], app[keys.PASSWORDS],
                                   app[keys.REVOCATION])
    broadcast = Broadcast(redis, config.redis_url.reveal(),
                          on_key_revoked=api_keys.cache.drop_key_id)
    app[keys.API_KEYS] = api_keys
    app[keys.BROADCAST] = broadcast
    broadcast.start()
    yield
    await broadcast.stop()


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[
            request_id_middleware,
            client_ip_middleware,
            security_headers_middleware,
            metrics_middleware,
            access_log_middleware,
            errors_middleware,
            timeout_middleware,
            body_limit_middleware,
            csrf_middleware,
            authn_middleware,
            ratelimit_middleware,
        ],
        client_max_size=config.max_body_bytes,
    )
    app[keys.CONFIG] = config
    app[keys.METRICS] = Metrics(app)
    app[keys.EXPECTED_SCHEMA_VERSION] = migrations.expected_version()
    app.cleanup_ctx.extend([_database, _redis, _security, _rate_limits])
    app.cleanup_ctx.append(_bridge)
    app.on_response_prepare.append(on_response_prepare)  # security headers on streams
    for module in ROUTE_MODULES:
        app.router.add_routes(module.routes)
    unguarded = unguarded_api_routes(app)
    if unguarded:
        raise RuntimeError(f"routes without an access rule: {', '.join(unguarded)}")
    app[keys.OPENAPI] = build_spec(app)
    setup_cors(app, config.frontend_origins)
    route_policy.install(app, policy_problems)  # after CORS: preflights get theirs too
    return app
