"""The application factory: middlewares (outermost first), resources, routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import ModuleType

import asyncpg
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

import archomata.access.routes
import archomata.audit.routes
import archomata.bridge.agents_routes
import archomata.bridge.routes
import archomata.identity.store.mfa
from archomata import db, keys, redis_client
from archomata.access import route_policy, step_up
from archomata.access.guards import access_rule, policy_problems
from archomata.audit import keyed
from archomata.audit.export_slots import EXPORTS_PER_ORG, ExportSlots
from archomata.audit.search_gate import SEARCHES_AT_ONCE, SearchGate
from archomata.bridge.api_keys import API_KEYS, ApiKeyAuthenticator
from archomata.bridge.broadcast import Broadcast
from archomata.bridge.service import queue_figures
from archomata.config import Config, ConfigError
from archomata.crypto import DataKeys
from archomata.gate.check import READY, STALE
from archomata.gate.ratelimit import RateLimiter
from archomata.http.cors import setup_cors
from archomata.http.middlewares.access_log import access_log_middleware
from archomata.http.middlewares.authn import AUTHENTICATORS, Authenticators, authn_middleware
from archomata.http.middlewares.body_limit import body_limit_middleware
from archomata.http.middlewares.client_ip import client_ip_middleware
from archomata.http.middlewares.csrf import csrf_middleware
from archomata.http.middlewares.errors import errors_middleware
from archomata.http.middlewares.metrics import metrics_middleware
from archomata.http.middlewares.params import params_middleware
from archomata.http.middlewares.probe import probe_middleware
from archomata.http.middlewares.ratelimit import ratelimit_middleware
from archomata.http.middlewares.request_id import request_id_middleware
from archomata.http.middlewares.security_headers import (
    on_response_prepare,
    security_headers_middleware,
)
from archomata.http.middlewares.timeout import timeout_middleware
from archomata.identity import breached
from archomata.identity.authenticator import AUTHENTICATOR, Authenticator
from archomata.identity.login_throttle import LoginThrottle
from archomata.identity.mfa import pending
from archomata.identity.passwords import PasswordHasher
from archomata.identity.revocation import REVOCATION, Revocation
from archomata.identity.routes import admin_users, auth, identities, me, mfa, sso
from archomata.identity.server_watch import ServerWatch
from archomata.identity.sessions import SessionStore
from archomata.mail import Mailer
from archomata.metrics import METRICS, Metrics, bridge_queue, worker_gauges
from archomata.ops import api_docs, health, migrations
from archomata.orgs.invitation_revocation import revoke_of_disabled
from archomata.orgs.routes import admin, groups, invitations, org
from archomata.orgs.service import JOIN, join_pending
from archomata.trading.routes import accounts, orders, strategies
from archomata.web.later import Later
from archomata.web.openapi import build_spec

log = logging.getLogger(__name__)

ROUTE_MODULES: tuple[ModuleType, ...] = (
    health, auth, invitations, me, admin, admin_users, org, archomata.access.routes, groups,
    archomata.audit.routes,
    archomata.bridge.agents_routes, accounts, orders, strategies, archomata.bridge.routes,
    sso, identities, mfa,
    api_docs,
)


class SchemaOutdatedError(RuntimeError):
    """The database schema is older than this code: run `archomata migrate`."""


class UnsafeDatabaseRoleError(ConfigError):
    """In production, ARCHOMATA_DATABASE_URL connects as a role row-level security does
    not hold for."""


async def _check_role(conn: asyncpg.Connection, config: Config) -> None:
    problems = await migrations.role_problems(conn)
    if not problems:
        return
    message = (f"{'; '.join(problems)}: row-level security is not enforced on it. "
               "Set ARCHOMATA_DATABASE_URL to the runtime role `archomata migrate` makes "
               "(the owner belongs in ARCHOMATA_DATABASE_OWNER_URL)")
    if config.is_production:
        raise UnsafeDatabaseRoleError(message)
    log.warning("%s", message)


async def _database(app: web.Application) -> AsyncIterator[None]:
    config = app[keys.CONFIG]
    pool = await db.create_pool(config.database_url.reveal(), config)
    try:
        async with pool.acquire() as conn:
            version = await migrations.current_version(conn)
            expected = app[keys.EXPECTED_SCHEMA_VERSION]
            if version is None or version < expected:
                raise SchemaOutdatedError(
                    f"database schema is at version {version or 0} but this code needs "
                    f"{expected}: run `archomata migrate` first")
            await _check_role(conn, config)
    except BaseException:
        await pool.close()
        raise
    app[keys.DB_POOL] = pool
    app[keys.DB_TURNS] = asyncio.Semaphore(config.db_pool_max)
    yield
    await pool.close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    # One retry on a fresh connection: after a Redis restart or failover, the pooled
    # connections are dead, and the first request on each would otherwise answer 503.
    # Each new connection also checks it reaches the server it did (server_watch.py).
    client = redis_client.connect(
        app[keys.CONFIG].redis_url.reveal(), socket_timeout=2, socket_connect_timeout=2,
        health_check_interval=30, retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        redis_connect_func=ServerWatch(READY, STALE).connected)
    app[keys.REDIS] = client
    yield
    await redis_client.close(client)


async def _security(app: web.Application) -> AsyncIterator[None]:
    config, redis, pool = app[keys.CONFIG], app[keys.REDIS], app[keys.DB_POOL]
    breached.load()  # once per process: never on the first password that needs it
    hasher = PasswordHasher(config.bcrypt_rounds, config.bcrypt_threads,
                            config.bcrypt_queue)
    revocation = Revocation(redis, pool)
    app[keys.PASSWORDS] = hasher
    app[keys.SESSIONS] = SessionStore(
        redis, config,
        lambda user_id, org_id=None: db.service_tx(pool, org_id=org_id, user_id=user_id))
    app[keys.SESSIONS].on_unready(READY, revocation.rebuild)
    app[keys.SESSIONS].on_reuse = app[METRICS].refresh_reuse.inc
    app[REVOCATION] = revocation
    app[AUTHENTICATOR] = Authenticator(config, redis, pool, revocation)
    app[keys.MAILER] = Mailer(
        config, on_failure=lambda stage: app[METRICS].mail_failures.labels(stage).inc())
    # Every door on the pool then raises the cache's version before a change to permissions
    # commits.
    with db.permission_cache(pool, revocation):
        yield
    hasher.close()


async def _rate_limits(app: web.Application) -> AsyncIterator[None]:
    config, redis = app[keys.CONFIG], app[keys.REDIS]
    on_fallback = app[METRICS].ratelimit_fallback.inc
    # The stand-ins in memory, while Redis is out, allow this worker's share of each
    # limit: the instance's workers together allow the limit, not N times it.
    share = config.worker.share
    app[keys.RATE_LIMITER] = RateLimiter(redis, on_fallback=on_fallback, share=share)
    app[keys.LOGIN_THROTTLE] = LoginThrottle(
        redis, free_failures=config.login_backoff_after,
        max_seconds=config.login_backoff_max_seconds, on_fallback=on_fallback,
        local_free_failures=share(config.login_backoff_after))
    app[keys.EXPORTS] = ExportSlots(redis, config.exports_per_instance,
                                    per_org_here=share(EXPORTS_PER_ORG))
    app[keys.AUDIT_SEARCHES] = SearchGate(app[keys.RATE_LIMITER],
                                          at_once=share(SEARCHES_AT_ONCE))
    yield


async def _bridge(app: web.Application) -> AsyncIterator[None]:
    """Secrets at rest, agent API keys, and this instance's pub/sub listener."""
    config, redis = app[keys.CONFIG], app[keys.REDIS]
    app[keys.DATA_KEYS] = DataKeys(config.data_key.reveal(),
                                   [k.reveal() for k in config.data_key_previous])
    api_keys = ApiKeyAuthenticator(redis, app[keys.DB_POOL], app[keys.PASSWORDS],
                                   app[REVOCATION])
    broadcast = Broadcast(redis, config.redis_url.reveal(),
                          on_key_revoked=api_keys.cache.drop_key_id)
    app[API_KEYS] = api_keys
    app[keys.BROADCAST] = broadcast
    pool = app[keys.DB_POOL]
    app[METRICS].at_scrape.append(bridge_queue(lambda: queue_figures(pool)))
    broadcast.start()
    yield
    await broadcast.stop()


async def _authenticators(app: web.Application) -> AsyncIterator[None]:
    """What the authn middleware asks, filled in here: it imports neither identity (JWTs
    for people) nor bridge (API keys for agents)."""
    app[AUTHENTICATORS] = Authenticators(people=app[AUTHENTICATOR], agents=app[API_KEYS])
    yield


async def _after_answers(app: web.Application) -> AsyncIterator[None]:
    """Work left for after an answer (mails, a registration's writes) finishes before the
    pools and the mailer it uses go: this context is the last set up, the first ended."""
    app[keys.LATER] = Later()
    yield
    await app[keys.LATER].drain(app[keys.CONFIG].shutdown_grace_seconds)


async def _stop_taking_work(app: web.Application) -> None:
    """SIGTERM (the runner's shutdown, once the listener is closed): readiness answers
    503 from now on, and every waiting long poll answers at once with no commands, so
    that what is in flight ends well within the grace."""
    app[keys.STOPPING].set()
    if keys.BROADCAST in app:
        app[keys.BROADCAST].release_all()


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[
            probe_middleware,  # /health/live answered here, with id and headers
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
            params_middleware,
        ],
        client_max_size=config.max_body_bytes,
    )
    app[keys.CONFIG] = config
    # What access asks identity (step_up.py).
    app[step_up.HAS_FACTOR] = archomata.identity.store.mfa.enabled
    # What identity asks of orgs: the joining a challenge holds, and what an account
    # disabled loses (its invitations).
    pending.install(JOIN, join_pending)
    app[admin_users.ON_DISABLED] = revoke_of_disabled
    if config.audit_key is not None:  # load_config requires it; a hand-built Config may not
        keyed.install(config.audit_key.reveal())
    app[METRICS] = Metrics(app)
    app[keys.EXPECTED_SCHEMA_VERSION] = migrations.expected_version()
    app[keys.STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stop_taking_work)
    app.cleanup_ctx.extend([_database, _redis, _security, _rate_limits])
    app.cleanup_ctx.extend([_bridge, _authenticators, worker_gauges])
    app.cleanup_ctx.append(_after_answers)
    app.on_response_prepare.append(on_response_prepare)  # security headers on streams
    for module in ROUTE_MODULES:
        app.router.add_routes(module.routes)
    app[keys.OPENAPI] = build_spec(app, access_rule)
    setup_cors(app, config.frontend_origins)
    route_policy.install(app, policy_problems)  # after CORS: preflights get theirs too
    return app
