"""The sliding window (in Redis, in a pipeline, in memory) and the failed-login throttle."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from archomata import keys
from archomata.access.guards import public
from archomata.app import create_app
from archomata.config import Config, RateLimit, Secret
from archomata.errors import RateLimited, Unauthorized
from archomata.gate import ratelimit
from archomata.gate.ratelimit import RateLimiter, _LocalWindows, decide
from archomata.identity.login_throttle import LoginThrottle, account_key
from archomata.ops.devservers import RedisServer
from archomata.web.json_io import read_json
from tests.conftest import app_with_routes
from tests.factories import FRONTEND, login, refresh_cookie_of, signed_up, unique_email

RATE_DB = 10


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/{RATE_DB}")
    await client.flushdb()
    yield client
    await client.aclose()




class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


class TestDecide:
    def test_refusal_waits_until_the_previous_window_weighs_little_enough(self) -> None:
        decision = decide(False, previous=10, current=5, elapsed=0, limit=RateLimit(10, 60))
        assert decision.retry_after_seconds == 36  # then 10 * 24/60 + 5 + 1 == 10
        assert decision.remaining == 0

    def test_refusal_with_a_full_current_window_waits_into_the_next(self) -> None:
        decision = decide(False, previous=0, current=10, elapsed=10_000, limit=RateLimit(10, 60))
        assert decision.retry_after_seconds == 56  # 50 s to the boundary, then 10 * 54/60 + 1

    def test_allowed_reports_remaining_and_window_reset(self) -> None:
        decision = decide(True, previous=4, current=3, elapsed=30_000, limit=RateLimit(10, 60))
        assert (decision.remaining, decision.reset_seconds) == (5, 30)
        assert decision.headers() == {"RateLimit-Limit": "10", "RateLimit-Remaining": "5",
                                      "RateLimit-Reset": "30"}

    def test_refused_decision_raises_429_with_headers(self) -> None:
        with pytest.raises(RateLimited) as caught:
            decide(False, 0, 2, 0, RateLimit(2, 10)).raise_if_refused()
        assert caught.value.headers["Retry-After"] == "15"  # 10 s, then 2 * 5/10 + 1 == 2
        assert caught.value.headers["RateLimit-Remaining"] == "0"


class TestLocalWindows:
    def test_window_slides(self) -> None:
        now = [1000.0]
        windows = _LocalWindows(lambda: now[0])
        limit = RateLimit(2, 10)
        assert [windows.hit("k", limit).allowed for _ in range(3)] == [True, True, False]
        now[0] = 1010.0  # next window: the previous one still weighs 2
        assert not windows.hit("k", limit).allowed
        now[0] = 1015.0  # half of it has slid out
        assert windows.hit("k", limit).allowed
        now[0] = 1040.0  # long gone
        assert windows.hit("k", limit).remaining == 1

    def test_memory_is_bounded(self) -> None:
        windows = _LocalWindows(lambda: 1000.0, max_keys=100)
        for n in range(1000):
            windows.hit(f"k{n}", RateLimit(1, 60))
        assert len(windows._entries) <= 100
        assert not windows.hit("k999", RateLimit(1, 60)).allowed  # the recent ones are kept


class TestRateLimiter:
    async def test_hit_counts_in_redis_and_refuses_past_the_limit(self, redis: Redis) -> None:
        limiter = RateLimiter(redis)
        limit = RateLimit(3, 3600)
        results = [await limiter.hit("rl:test:a", limit) for _ in range(4)]
        assert [r.allowed for r in results] == [True, True, True, False]
        assert [r.remaining for r in results] == [2, 1, 0, 0]
        assert results[3].retry_after_seconds >= 1
        assert (await limiter.hit("rl:test:b", limit)).allowed
        assert 0 < await redis.pttl("rl:test:a") <= 7_200_000

    async def test_check_rides_in_another_pipeline_in_one_round_trip(self, redis: Redis) -> None:
        limiter = RateLimiter(redis)
        limit = RateLimit(2, 60)
        for expected in (True, True, False):
            async with redis.pipeline(transaction=False) as pipe:
                pending = limiter.queue(pipe, "rl:test:pipe", limit)
                pipe.exists("some:revocation:key")
                replies = await pipe.execute(raise_on_error=False)
            assert replies[1] == 0
            assert limiter.result_from(pending, replies[0]).allowed is expected

    async def test_flushed_script_cache_is_survived(self, redis: Redis) -> None:
        fallbacks = Counter()
        limiter = RateLimiter(redis, on_fallback=fallbacks)
        limit = RateLimit(10, 60)
        assert (await limiter.hit("rl:test:s", limit)).remaining == 9
        await redis.script_flush()
        assert (await limiter.hit("rl:test:s", limit)).remaining == 8  # reloaded at once
        await redis.script_flush()
        async with redis.pipeline(transaction=False) as pipe:
            pending = limiter.queue(pipe, "rl:test:s", limit)
            replies = await pipe.execute(raise_on_error=False)
        assert limiter.result_from(pending, replies[0]).allowed  # from memory, this once
        async with redis.pipeline(transaction=False) as pipe:
            pending = limiter.queue(pipe, "rl:test:s", limit)  # sends the script again
            replies = await pipe.execute(raise_on_error=False)
        assert limiter.result_from(pending, replies[0]).remaining == 7
        assert fallbacks.count == 1

    async def test_unreachable_redis_limits_from_memory_and_logs_once(
            self, nowhere: Redis, caplog: pytest.LogCaptureFixture) -> None:
        fallbacks = Counter()
        limiter = RateLimiter(nowhere, on_fallback=fallbacks)
        results = [await limiter.hit("rl:test:m", RateLimit(2, 60)) for _ in range(3)]
        assert [r.allowed for r in results] == [True, True, False]
        assert fallbacks.count == 3
        warnings = [r for r in caplog.records if r.name == "archomata.gate.ratelimit"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING

    @pytest.mark.parametrize("reply", [ConnectionError("down"), b"garbage", [1, 2]])
    async def test_failed_or_odd_reply_is_decided_from_memory(self, nowhere: Redis,
                                                              reply: object) -> None:
        fallbacks = Counter()
        limiter = RateLimiter(nowhere, on_fallback=fallbacks)
        pending = limiter.queue(nowhere.pipeline(transaction=False), "k", RateLimit(1, 60))
        assert limiter.result_from(pending, reply).allowed
        assert not limiter.result_from(pending, reply).allowed
        assert fallbacks.count == 2


class TestLoginThrottle:
    async def test_backoff_after_free_failures_then_reset(self, redis: Redis) -> None:
        throttle = LoginThrottle(redis, free_failures=2, max_seconds=300, base_seconds=30)
        email = "email:someone@example.test"  # the subject, as identity.throttle_subject names it
        assert await throttle.record_failure(email) == 0
        assert await throttle.record_failure(email) == 0
        await throttle.check(email)
        assert await throttle.record_failure(email) == 30
        with pytest.raises(RateLimited) as caught:
            await throttle.check(email)
        assert 29 <= int(caught.value.headers["Retry-After"]) <= 30
        assert await throttle.record_failure(email) == 60
        await throttle.check("email:other@example.test")
        await throttle.reset(email)
        await throttle.check(email)

    async def test_backoff_is_capped(self, redis: Redis) -> None:
        throttle = LoginThrottle(redis, free_failures=1, max_seconds=90, base_seconds=30)
        waits = [await throttle.record_failure("cap@example.test") for _ in range(5)]
        assert waits == [0, 30, 60, 90, 90]

    async def test_redis_holds_a_hash_never_the_email(self, redis: Redis) -> None:
        throttle = LoginThrottle(redis, free_failures=0, max_seconds=5)
        await throttle.record_failure("secret.person@example.test")
        names = [k.decode() for k in await redis.keys("*")]
        assert names and not any("secret" in n or "example" in n for n in names)
        assert all(n.startswith(account_key("secret.person@example.test")) for n in names)

    async def test_unreachable_redis_throttles_from_memory(self, nowhere: Redis) -> None:
        fallbacks = Counter()
        throttle = LoginThrottle(nowhere, free_failures=1, max_seconds=60, base_seconds=10,
                                 on_fallback=fallbacks)
        assert await throttle.record_failure("a@example.test") == 0
        assert await throttle.record_failure("a@example.test") == 10
        with pytest.raises(RateLimited):
            await throttle.check("a@example.test")
        await throttle.reset("a@example.test")
        await throttle.check("a@example.test")
        assert fallbacks.count == 5

    async def test_memory_fallback_forgets_old_accounts_when_full(
            self, nowhere: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ratelimit, "MAX_LOCAL_KEYS", 2)
        now = [0.0]
        throttle = LoginThrottle(nowhere, free_failures=0, max_seconds=1, memory_seconds=10,
                                 clock=lambda: now[0])
        await throttle.record_failure("old@example.test")
        now[0] = 20.0
        for name in ("b", "c"):
            await throttle.record_failure(f"{name}@example.test")
        assert len(throttle._local) == 2
        with pytest.raises(RateLimited):
            await throttle.check("c@example.test")


login_routes = web.RouteTableDef()


@login_routes.post("/api/v1/auth/_test/login")
@public
async def fake_login(request: web.Request) -> web.Response:
    """What the real login handler does with the throttle."""
    body = await read_json(request)
    throttle = request.app[keys.LOGIN_THROTTLE]
    await throttle.check(body["email"])
    if body["password"] != "right":
        await throttle.record_failure(body["email"])
        raise Unauthorized("Wrong email or password.", code="invalid_credentials")
    await throttle.reset(body["email"])
    return web.json_response({})


class TestThrottleOverHttp:
    async def test_many_ips_cannot_brute_force_one_account_and_the_owner_gets_back_in(
            self, aiohttp_client: Any, config: Config, redis: Redis,
            redis_server: RedisServer) -> None:
        throttled = dataclasses.replace(
            config, login_backoff_after=2, login_backoff_max_seconds=1,
            redis_url=Secret(f"redis://127.0.0.1:{redis_server.port}/{RATE_DB}"),
            trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
        client = await aiohttp_client(app_with_routes(throttled, login_routes))

        async def attempt(ip: int, password: str, email: str = "owner@example.test") -> Any:
            return await client.post("/api/v1/auth/_test/login",
                                     json={"email": email, "password": password},
                                     headers={"X-Forwarded-For": f"203.0.113.{ip}"})

        for ip in range(3):
            assert (await attempt(ip, "wrong")).status == 401
        refused = await attempt(10, "right")
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert "RateLimit-Remaining" not in refused.headers  # the IP limit is not the reason
        assert (await attempt(11, "right", "bystander@example.test")).status == 200
        await asyncio.sleep(1.05)
        assert (await attempt(12, "right")).status == 200
        assert (await attempt(13, "wrong")).status == 401  # the slate was wiped on success


class TestEndingAndRenewingSessions:
    """Logout, logout-all and deleting a session are never refused; refresh and switch-org
    spend their own bucket (per IP, and 10 a minute per session), never the login one."""

    @staticmethod
    async def tight(aiohttp_client: Any, config: Config, **limits: RateLimit) -> Any:
        """The service with the contract's login limit, behind a proxy it believes (each
        test its own addresses: the suite's other requests spend none of their budget)."""
        return await aiohttp_client(create_app(dataclasses.replace(
            config, rate_limit_login=RateLimit(10, 60),
            trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),), **limits)))

    async def test_thirty_logouts_after_the_login_bucket_is_spent_all_succeed(
            self, aiohttp_client: Any, client: Any, config: Config, mail_sink: Any) -> None:
        person = await signed_up(client, mail_sink)
        sessions = [await login(client, person.email, person.password) for _ in range(30)]
        service = await self.tight(aiohttp_client, config)
        office = {"X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}"}
        answers = [(await service.post("/api/v1/auth/resend-verification", headers=office,
                                       json={"email": unique_email()})).status
                   for _ in range(11)]
        assert answers == [202] * 10 + [429]  # the address has spent its login budget
        by = ({**s.cookie, **office} if i % 3 == 0 else  # the cookie alone
              {**s.auth, **office} if i % 3 == 1 else  # the access token alone
              {**s.auth, **s.cookie, **office}  # both
              for i, s in enumerate(sessions[:28]))
        statuses = [(await service.post("/api/v1/auth/logout", headers=h)).status for h in by]
        listed = await (await service.get("/api/v1/auth/sessions",
                                          headers={**person.auth, **office})).json()
        other = next(s["id"] for s in listed["items"] if not s["current"])
        statuses.append((await service.delete(f"/api/v1/auth/sessions/{other}",
                                              headers={**person.auth, **office})).status)
        statuses.append((await service.post("/api/v1/auth/logout-all",
                                            headers={**person.auth, **office})).status)
        assert statuses == [204] * 30
        for gone in (*sessions, person):
            assert (await service.get("/api/v1/me", headers={**gone.auth, **office})).status \
                == 401
        # Still spent: ending sessions gave the login bucket nothing back, took nothing.
        assert (await service.post("/api/v1/auth/resend-verification", headers=office,
                                   json={"email": unique_email()})).status == 429

    async def test_a_session_refreshes_ten_times_a_minute_others_from_its_address_go_on(
            self, aiohttp_client: Any, client: Any, config: Config, mail_sink: Any) -> None:
        person = await signed_up(client, mail_sink)
        busy = await login(client, person.email, person.password)
        calm = await login(client, person.email, person.password)
        service = await self.tight(aiohttp_client, config)
        office = {"X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}"}

        async def renew(cookie: str) -> Any:
            return await service.post("/api/v1/auth/refresh", headers={
                "Cookie": f"archomata_refresh={cookie}", "Origin": FRONTEND, **office})

        cookie = busy.refresh or ""
        for _ in range(10):
            renewed = await renew(cookie)
            assert renewed.status == 200, await renewed.text()
            cookie = refresh_cookie_of(renewed) or ""
        refused = await renew(cookie)
        assert refused.status == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await refused.json())["code"] == "rate_limited"
        # Refused before anything changed: the cookie it carried is still the current one,
        # and the session's org switch shares its count.
        assert (await service.post("/api/v1/auth/switch-org", json={"org_id": str(
            person.org_id)}, headers={**busy.auth, **office})).status == 429
        # Another session from the same address is not held back by it...
        assert (await renew(calm.refresh or "")).status == 200
        # ...and twelve refreshes spent none of the address's login budget.
        answers = [(await service.post("/api/v1/auth/resend-verification", headers=office,
                                       json={"email": unique_email()})).status
                   for _ in range(11)]
        assert answers == [202] * 10 + [429]

    async def test_refresh_and_switch_org_share_a_bucket_per_address(
            self, aiohttp_client: Any, client: Any, config: Config, mail_sink: Any) -> None:
        person = await signed_up(client, mail_sink)
        families = [await login(client, person.email, person.password) for _ in range(4)]
        service = await self.tight(aiohttp_client, config,
                                   rate_limit_refresh=RateLimit(4, 60))
        office = {"X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}"}
        statuses = [(await service.post("/api/v1/auth/refresh", headers={
            **s.cookie, **office})).status for s in families[:3]]
        statuses.append((await service.post("/api/v1/auth/switch-org", json={
            "org_id": str(person.org_id)}, headers={**families[3].auth, **office})).status)
        statuses.append((await service.post("/api/v1/auth/refresh", headers={
            **families[3].cookie, **office})).status)
        assert statuses == [200, 200, 200, 200, 429]
        elsewhere = {"X-Forwarded-For": "192.0.2.77"}
        assert (await service.post("/api/v1/auth/refresh", headers={
            **families[3].cookie, **elsewhere})).status == 200
        assert (await service.post("/api/v1/auth/logout", headers={
            **families[0].auth, **office})).status == 204
