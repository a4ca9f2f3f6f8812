"""Security headers on every response; HSTS only over HTTPS or from a trusted proxy."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from aiohttp import web

from archomata.access.guards import public
from archomata.access.route_policy import RateClass
from archomata.config import Config
from tests.conftest import app_with_routes

routes = web.RouteTableDef()


@routes.get("/api/v1/_test/boom")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("kaput")


@routes.get("/api/v1/_test/stream")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"line\n")
    return response


@routes.get("/api/v1/auth/_test/redirect")
@public
async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/elsewhere")  # passes through the errors middleware, as SSO does


@routes.get("/api/v1/auth/_test/whoami")
@public
async def auth_route(request: web.Request) -> web.Response:
    return web.json_response({})


EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


@pytest.fixture
async def behind_proxy(aiohttp_client: Any, config: Config) -> Any:
    proxied = dataclasses.replace(
        config, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    return await aiohttp_client(app_with_routes(proxied, routes))


def assert_secured(response: Any) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, name


class TestSecurityHeaders:
    @pytest.mark.parametrize(("path", "status"), [
        ("/health/live", 200), ("/api/v1/nothing-here", 404), ("/api/v1/_test/boom", 500),
        ("/api/v1/_test/stream", 200), ("/metrics", 200)])
    async def test_every_response_carries_them(self, test_client: Any, path: str,
                                               status: int) -> None:
        response = await test_client.get(path)
        assert response.status == status
        assert_secured(response)
        assert "Strict-Transport-Security" not in response.headers

    async def test_errors_rendered_by_the_errors_middleware_carry_them(
            self, test_client: Any) -> None:
        response = await test_client.delete("/health/live")
        assert response.status == 405
        assert response.content_type == "application/problem+json"
        assert_secured(response)

    async def test_redirects_carry_them(self, test_client: Any) -> None:
        response = await test_client.get("/api/v1/auth/_test/redirect", allow_redirects=False)
        assert response.status == 302
        assert_secured(response)
        assert response.headers["Cache-Control"] == "no-store"

    @pytest.mark.parametrize("path", ["/api/v1/auth/_test/whoami", "/api/v1/me",
                                      "/api/v1/accounts", "/api/v1/_test/stream",
                                      "/api/v1/bridge/heartbeat", "/api/v1/no-such-route",
                                      "/api/v1/auth/no-such-route"])
    async def test_api_responses_are_not_stored(self, test_client: Any, path: str) -> None:
        # Declared routes (answered or refused 401), a stream, and paths no route matches.
        response = await test_client.get(path)
        assert response.headers["Cache-Control"] == "no-store"

    @pytest.mark.parametrize("path", ["/health/live", "/no-such-page"])
    async def test_operations_responses_keep_their_cache_control(
            self, test_client: Any, path: str) -> None:
        assert "no-store" not in (await test_client.get(path)).headers.get(
            "Cache-Control", "")

    async def test_a_route_can_declare_itself_storable(self, aiohttp_client: Any,
                                                       config: Config) -> None:
        storable = web.RouteTableDef()

        @storable.get("/api/v1/_test/storable")
        @public(rate=RateClass.API, no_store=False)
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({})

        client = await aiohttp_client(app_with_routes(config, storable))
        response = await client.get("/api/v1/_test/storable")
        assert response.status == 200
        assert "Cache-Control" not in response.headers


class TestHsts:
    async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(
            self, test_client: Any) -> None:
        response = await test_client.get("/health/live", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in response.headers

    async def test_trusted_proxy_saying_https_gets_hsts(self, behind_proxy: Any) -> None:
        response = await behind_proxy.get("/api/v1/nothing",
                                          headers={"X-Forwarded-Proto": "https"})
        assert response.status == 404
        assert response.headers["Strict-Transport-Security"] == \
            "max-age=63072000; includeSubDomains"

    async def test_trusted_proxy_saying_http_gets_none(self, behind_proxy: Any) -> None:
        response = await behind_proxy.get("/health/live",
                                          headers={"X-Forwarded-Proto": "https, http"})
        assert "Strict-Transport-Security" not in response.headers
