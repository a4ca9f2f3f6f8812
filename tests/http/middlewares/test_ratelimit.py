"""Per-IP limits by route class, in Redis, shared by instances, held from memory without it."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis

from archomata import keys
from archomata.access.guards import public
from archomata.access.route_policy import RateClass
from archomata.config import Config, RateLimit, Secret
from archomata.errors import NotFound
from archomata.gate.check import _bucket
from archomata.gate.ratelimit import RateDecision
from archomata.http.middlewares.ratelimit import ratelimit_middleware
from archomata.ops.devservers import RedisServer, free_port
from tests.conftest import app_with_routes

routes = web.RouteTableDef()
RATE_DB = 9  # this module's own Redis database, flushed before each test


@routes.post("/api/v1/auth/_test/ping")
@public
async def auth_ping(request: web.Request) -> web.Response:
    return web.json_response({})


@routes.get("/api/v1/_test/item")
@public(rate=RateClass.API)
async def item(request: web.Request) -> web.Response:
    return web.json_response({})


@routes.get("/api/v1/_test/missing")
@public(rate=RateClass.API)
async def missing(request: web.Request) -> web.Response:
    raise NotFound("No such item.")


@pytest.fixture
async def app_config(config: Config, redis_server: RedisServer) -> Config:
    url = f"redis://127.0.0.1:{redis_server.port}/{RATE_DB}"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    return dataclasses.replace(config, redis_url=Secret(url),
                               rate_limit_login=RateLimit(3, 60), rate_limit_api=RateLimit(5, 60))


@pytest.fixture
async def behind_proxy(aiohttp_client: Any, app_config: Config) -> Any:
    proxied = dataclasses.replace(app_config,
                                  trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    return await aiohttp_client(app_with_routes(proxied, routes))


def headers_of(response: Any) -> tuple[int, int, int]:
    return (int(response.headers["RateLimit-Limit"]), int(response.headers["RateLimit-Remaining"]),
            int(response.headers["RateLimit-Reset"]))


async def assert_limited(response: Any) -> None:
    assert response.status == 429
    body = await response.json()
    assert body["code"] == "rate_limited"
    # A full window waits for its end, then for a third of it to slide out: 80 s at most.
    assert 1 <= int(response.headers["Retry-After"]) <= 80
    limit, remaining, reset = headers_of(response)
    assert (limit, remaining) == (3, 0)
    assert reset == int(response.headers["Retry-After"])


class TestLimits:
    async def test_login_class_is_limited_per_ip_with_headers(self, test_client: Any) -> None:
        for remaining in (2, 1, 0):
            response = await test_client.post("/api/v1/auth/_test/ping")
            assert response.status == 200
            limit, left, reset = headers_of(response)
            assert (limit, left) == (3, remaining)
            assert 1 <= reset <= 60
        await assert_limited(await test_client.post("/api/v1/auth/_test/ping"))

    async def test_classes_have_separate_budgets(self, test_client: Any) -> None:
        for _ in range(3):
            await test_client.post("/api/v1/auth/_test/ping")
        assert (await test_client.post("/api/v1/auth/_test/ping")).status == 429
        response = await test_client.get("/api/v1/_test/item")
        assert response.status == 200
        assert headers_of(response)[:2] == (5, 4)

    async def test_real_login_routes_are_in_the_login_class(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/auth/password-reset/request",
                                          json={"email": "x@example.test"})
        assert headers_of(response)[0] == 3

    async def test_error_answers_carry_the_headers_too(self, test_client: Any) -> None:
        response = await test_client.get("/api/v1/_test/missing")
        assert response.status == 404
        assert headers_of(response)[:2] == (5, 4)

    async def test_authenticated_auth_routes_count_as_api(self, test_client: Any) -> None:
        response = await test_client.get("/api/v1/auth/sessions")
        assert response.status == 401
        assert headers_of(response)[:2] == (5, 4)

    async def test_unknown_routes_count_as_api(self, test_client: Any) -> None:
        for _ in range(2):
            assert (await test_client.post("/api/v1/auth/no-such-route")).status == 404
        assert headers_of(await test_client.get("/api/v1/_test/item"))[:2] == (5, 2)

    async def test_preflights_count_as_api_not_login(self, test_client: Any) -> None:
        response = await test_client.options("/api/v1/auth/login", headers={
            "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"})
        assert response.status == 200
        assert headers_of(response)[0] == 5

    async def test_health_metrics_and_openapi_are_not_limited(self, test_client: Any) -> None:
        for _ in range(7):
            for path in ("/health/live", "/metrics", "/api/v1/openapi.json"):
                response = await test_client.get(path)
                assert response.status == 200
                assert "RateLimit-Limit" not in response.headers


class TestClientAddress:
    async def test_spoofed_forwarded_for_from_untrusted_peer_does_not_escape(
            self, test_client: Any) -> None:
        for n in range(3):
            response = await test_client.post("/api/v1/auth/_test/ping",
                                              headers={"X-Forwarded-For": f"203.0.113.{n}"})
            assert response.status == 200
        await assert_limited(await test_client.post(
            "/api/v1/auth/_test/ping", headers={"X-Forwarded-For": "203.0.113.99"}))

    async def test_trusted_proxy_forwarded_for_is_honoured(self, behind_proxy: Any) -> None:
        first = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        for _ in range(3):
            assert (await behind_proxy.post("/api/v1/auth/_test/ping", headers=first)).status \
                == 200
        await assert_limited(await behind_proxy.post("/api/v1/auth/_test/ping", headers={
            "X-Forwarded-For": "203.0.113.7"}))
        other = await behind_proxy.post("/api/v1/auth/_test/ping",
                                        headers={"X-Forwarded-For": "203.0.113.8"})
        assert other.status == 200


    async def test_ipv6_clients_count_per_64(self, behind_proxy: Any) -> None:
        for n in range(3):
            response = await behind_proxy.post(
                "/api/v1/auth/_test/ping", headers={"X-Forwarded-For": f"2001:db8:1:2::{n}"})
            assert response.status == 200
        await assert_limited(await behind_proxy.post(
            "/api/v1/auth/_test/ping", headers={"X-Forwarded-For": "2001:db8:1:2:ffff::1"}))
        other = await behind_proxy.post("/api/v1/auth/_test/ping",
                                        headers={"X-Forwarded-For": "2001:db8:1:3::1"})
        assert other.status == 200


    def test_a_client_without_an_address_is_a_bucket_of_its_own(self) -> None:
        assert _bucket("unknown") == "unknown"
        assert _bucket("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


class TestShared:
    async def test_two_instances_share_the_limit_through_redis(
            self, aiohttp_client: Any, app_config: Config) -> None:
        one = await aiohttp_client(app_with_routes(app_config, routes))
        two = await aiohttp_client(app_with_routes(app_config, routes))
        assert (await one.post("/api/v1/auth/_test/ping")).status == 200
        assert (await two.post("/api/v1/auth/_test/ping")).status == 200
        assert (await one.post("/api/v1/auth/_test/ping")).status == 200
        await assert_limited(await two.post("/api/v1/auth/_test/ping"))

    async def test_decision_made_earlier_in_the_request_is_used_without_redis(
            self, aiohttp_client: Any, app_config: Config) -> None:
        refused = RateDecision(False, 3, 0, 7, 7)

        @web.middleware
        async def decided(request: web.Request, handler: Handler) -> web.StreamResponse:
            request[keys.RATE_DECISION] = refused
            return await handler(request)

        app = app_with_routes(app_config, routes)
        app.middlewares.insert(app.middlewares.index(ratelimit_middleware), decided)
        client = await aiohttp_client(app)
        response = await client.get("/api/v1/_test/item")
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        redis = Redis.from_url(app_config.redis_url.reveal())
        assert await redis.keys("rl:*") == []
        await redis.aclose()


class TestRedisDown:
    async def test_memory_holds_the_limit_while_redis_is_stopped_and_metrics_count_it(
            self, aiohttp_client: Any, app_config: Config, workdir: Path) -> None:
        redis = RedisServer(workdir / "redis-ratelimit", free_port(), durable=False)
        redis.start()
        try:
            app = app_with_routes(dataclasses.replace(app_config, redis_url=Secret(redis.url)),
                                  routes)
            client = await aiohttp_client(app)
            assert (await client.post("/api/v1/auth/_test/ping")).status == 200
            await asyncio.to_thread(redis.stop)
            for remaining in (2, 1, 0):
                response = await client.post("/api/v1/auth/_test/ping")
                assert response.status == 200
                assert headers_of(response)[1] == remaining
            await assert_limited(await client.post("/api/v1/auth/_test/ping"))
            metrics = await (await client.get("/metrics")).text()
            assert "archomata_ratelimit_fallback_total 4.0" in metrics
        finally:
            redis.stop()
