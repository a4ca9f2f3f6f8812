"""The Redis boundary (archomata.redis_boundary): a Redis that is stopped, or that refuses a
command, makes every path that needs it answer 503 problem+json `service_unavailable`,
never a 500; the deliberate fallbacks (rate limits and login backoff in memory, export
slots per instance, best-effort caches and wake-ups) keep serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from archomata.app import create_app
from archomata.audit.export_slots import ExportSlots
from archomata.bridge.api_keys import ApiKeyAuthenticator
from archomata.bridge.broadcast import Broadcast
from archomata.config import Config, RateLimit, load_config
from archomata.db import create_pool
from archomata.errors import ServiceUnavailable
from archomata.gate.ratelimit import RateLimiter
from archomata.identity.login_throttle import LoginThrottle
from archomata.identity.revocation import Revocation
from archomata.identity.sessions import SessionStore
from archomata.identity.sso_state import LoginStates, new_login
from archomata.ops.devservers import RedisServer, free_port
from tests.factories import FRONTEND, agent_auth, agent_with_key, signed_up
from tests.oidc_provider import OidcProvider


async def assert_unavailable(response: Any) -> None:
    assert response.status == 503, await response.text()
    assert response.content_type == "application/problem+json"
    assert (await response.json())["code"] == "service_unavailable"


@pytest.fixture
async def idp() -> AsyncIterator[OidcProvider]:
    provider = OidcProvider("google", "archomata-boundary.example", "boundary-client-secret")
    await provider.start()
    yield provider
    await provider.close()


@pytest.fixture
async def client(aiohttp_client: Any, environ: dict[str, str], forgetful_redis: RedisServer,
                 idp: OidcProvider) -> Any:
    """The whole app on `forgetful_redis`, with Google sign-in configured."""
    config = load_config({**environ, "ARCHOMATA_REDIS_URL": forgetful_redis.url,
                          "ARCHOMATA_SSO_GOOGLE_CLIENT_ID": idp.client_id,
                          "ARCHOMATA_SSO_GOOGLE_CLIENT_SECRET": idp.client_secret,
                          "ARCHOMATA_SSO_GOOGLE_METADATA_URL": idp.metadata_url})
    return await aiohttp_client(create_app(config))


class TestRedisStopped:
    async def test_every_path_that_needs_redis_answers_503_problem(
            self, client: Any, mail_sink: Any, forgetful_redis: RedisServer) -> None:
        me = await signed_up(client, mail_sink)
        _, api_key = await agent_with_key(client, me)
        cookie = {"Cookie": f"archomata_refresh={me.refresh}", "Origin": FRONTEND}
        await asyncio.to_thread(forgetful_redis.stop)
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "login": lambda: client.post("/api/v1/auth/login", json={
                "email": me.email, "password": me.password}),
            "refresh": lambda: client.post("/api/v1/auth/refresh", headers=cookie),
            "logout": lambda: client.post("/api/v1/auth/logout", headers=cookie),
            "session list": lambda: client.get("/api/v1/auth/sessions", headers=me.auth),
            "session delete": lambda: client.delete(f"/api/v1/auth/sessions/{uuid4()}",
                                                    headers=me.auth),
            "switch-org": lambda: client.post("/api/v1/auth/switch-org", json={
                "org_id": str(me.org_id)}, headers={**me.auth, **cookie}),
            "authenticated GET": lambda: client.get("/api/v1/org", headers=me.auth),
            "bridge": lambda: client.get("/api/v1/bridge/accounts",
                                         headers=agent_auth(api_key)),
            "export": lambda: client.get("/api/v1/audit-logs/export", headers=me.auth),
        }
        for name, call in calls.items():
            response = await call()
            assert response.status == 503, (name, await response.text())
            await assert_unavailable(response)

    async def test_sso_login_start_sends_to_the_login_page_with_the_code(
            self, client: Any, forgetful_redis: RedisServer) -> None:
        await asyncio.to_thread(forgetful_redis.stop)
        response = await client.get("/api/v1/auth/sso/google/login", allow_redirects=False)
        assert response.status == 302
        assert response.headers["Location"].endswith("/login?error=service_unavailable")


class TestRedisRefusingACommand:
    """A Redis that is up but fails one command (here: an ACL denies it) fails the path
    that sends it, not the request before it: each untranslated call would be a 500."""

    async def test_listing_sessions_when_redis_refuses_smembers(
            self, client: Any, mail_sink: Any, forgetful_redis: RedisServer) -> None:
        me = await signed_up(client, mail_sink)
        # Rebuilt first (this Redis is new): the rebuild ends families, with SMEMBERS.
        assert (await client.get("/api/v1/org", headers=me.auth)).status == 200
        admin = Redis.from_url(forgetful_redis.url)
        try:
            await admin.execute_command("ACL", "SETUSER", "default", "-smembers")
            assert (await client.get("/api/v1/org", headers=me.auth)).status == 200
            await assert_unavailable(await client.get("/api/v1/auth/sessions",
                                                      headers=me.auth))
        finally:
            await admin.execute_command("ACL", "SETUSER", "default", "+@all")
            await admin.aclose()


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    """A real client of a Redis that is not there: connections are refused."""
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}", socket_connect_timeout=1,
                            socket_timeout=1)
    yield client
    await client.aclose()


async def raises_unavailable(call: Awaitable[Any]) -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        await call
    assert caught.value.code == "service_unavailable"
    assert isinstance(caught.value.__cause__, RedisError | OSError)


class TestComponentsWithoutRedis:
    """Each component's every Redis call, below HTTP: translated, or a fallback on purpose."""

    async def test_every_session_store_call_is_translated(self, dead_redis: Redis,
                                                          config: Config) -> None:
        store = SessionStore(dead_redis, config)  # Redis alone: no transaction is written
        user, sid, no_tx = uuid4(), uuid4(), cast(Any, None)
        for call in (store.create(user, None, "127.0.0.1", "ua"),
                     store.rotate("token", "127.0.0.1", "ua"),
                     store.move_to_org(sid, uuid4()),
                     store.list_for_user(user),
                     store.end(sid),
                     store.revoke(sid, user),
                     store.revoke_user(no_tx, user),
                     store.cut_off(no_tx, user, end_sessions=True)):
            await raises_unavailable(call)

    async def test_revocation_writes_and_rebuild_are_translated_the_cache_is_not(
            self, dead_redis: Redis, config: Config) -> None:
        pool = await create_pool(config.database_url.reveal(), config, min_size=1, max_size=1)
        try:
            revocation = Revocation(dead_redis, pool)
            for call in (revocation.rebuild(), revocation.set_org_disabled(uuid4(), True),
                         revocation.set_user_disabled(uuid4(), True),
                         revocation.raise_versions({uuid4(): 1})):
                await raises_unavailable(call)
            # Only a cache: the next request loads from PostgreSQL.
            await revocation.cache_authz(uuid4(), uuid4(), 1, None)
        finally:
            await pool.close()

    async def test_sso_states_and_api_key_calls_are_translated(
            self, dead_redis: Redis) -> None:
        states = LoginStates(dead_redis)
        login = new_login("google", "/")
        await raises_unavailable(states.put(login.state, login.pending))
        await raises_unavailable(states.take(login.state))
        api_keys = ApiKeyAuthenticator(dead_redis, cast(Any, None), cast(Any, None),
                                       cast(Any, None))
        await raises_unavailable(api_keys.revoke("ak_test"))
        # The check a key makes when Redis lost its state (reached between two outages).
        await raises_unavailable(api_keys._rebuild())

    async def test_the_fallbacks_keep_serving(self, dead_redis: Redis) -> None:
        limiter = RateLimiter(dead_redis)
        assert (await limiter.hit("rl:test", RateLimit(1, 60))).allowed
        assert not (await limiter.hit("rl:test", RateLimit(1, 60))).allowed  # memory holds
        throttle = LoginThrottle(dead_redis, free_failures=1, max_seconds=60)
        await throttle.check("someone")
        await throttle.record_failure("someone")
        await throttle.reset("someone")
        slots = ExportSlots(dead_redis, per_instance=1)
        org = UUID(int=1)
        async with slots.hold(org) as lease:
            assert not lease.lost and slots.running == 1
        broadcast = Broadcast(dead_redis, "redis://127.0.0.1:1", on_key_revoked=lambda _: None)
        await broadcast.wake(uuid4())
        await broadcast.key_revoked("ak_test")
        with broadcast.polls.waiting(uuid4()) as poll:  # it waits for its deadline
            await broadcast.polls.register(poll)
            assert not poll.registered and not poll.superseded
            await broadcast.polls.leave(poll)

