"""Route policy is what the route's guard declares, read from the matched route: a new
route gets its timeout, rate class, CSRF treatment and authentication from its own
decorator, wherever its path is; create_app refuses declarations that contradict."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from archomata import app as app_module
from archomata import keys
from archomata.access.guards import (
    agent_only,
    authenticated,
    operations,
    policy_problems,
    public,
    require_permission,
)
from archomata.access.route_policy import Authn, RateClass, TimeoutClass, declared_policy
from archomata.app import create_app
from archomata.config import Config, RateLimit, Secret
from archomata.errors import NotFound
from archomata.identity.authenticator import AUTHENTICATOR
from archomata.ops.devservers import RedisServer
from tests.conftest import app_with_routes
from tests.factories import agent_auth, agent_with_key, signed_up

FRONTEND = "http://localhost:5173"
EVIL = "https://evil.example"
COOKIE = {"Cookie": "archomata_refresh=some-refresh-token"}
# Well past the default class's timeout below, and that timeout well past what a real
# route here takes on a loaded machine (signing up, creating an agent: 0.2 s gave 504s).
SLOW_SECONDS = 3.0
POLICY_DB = 11  # this module's own Redis database, flushed before each test

routes = web.RouteTableDef()


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(SLOW_SECONDS)
    return web.json_response({})


async def _who(request: web.Request) -> web.Response:
    principal = request.get(keys.PRINCIPAL)
    return web.json_response({"principal": None if principal is None
                              else principal.actor_type.value})


def fresh(handler: Any) -> Any:
    """A handler of its own: a rule marks the function it is given."""
    async def copy(request: web.Request) -> web.StreamResponse:
        return await handler(request)
    return copy


# Paths chosen so that the old path constants would class each route the other way.
routes.get("/api/v1/_test/slow-default")(public(fresh(_slow)))
routes.get("/api/v1/_test/slow-long-poll")(public(timeout=TimeoutClass.LONG_POLL)(fresh(_slow)))
routes.get("/api/v1/_test/slow-untimed")(public(timeout=TimeoutClass.UNTIMED)(fresh(_slow)))
routes.get("/api/v1/things/_test/open")(public(fresh(_who)))
routes.get("/api/v1/auth/_test/plain")(public(rate=RateClass.API)(fresh(_who)))
routes.get("/api/v1/_test/ops")(operations(fresh(_who)))
routes.get("/api/v1/auth/_test/me")(authenticated(fresh(_who)))
routes.get("/api/v1/_test/agent")(agent_only(fresh(_who)))


@routes.post("/api/v1/bridge/_test/checked")
@public
async def checked(request: web.Request) -> web.Response:
    return web.Response(status=204)


@routes.post("/api/v1/_test/exempt")
@public(csrf_exempt="called by a partner's server, which holds no cookie of ours")
async def exempt(request: web.Request) -> web.Response:
    return web.Response(status=204)


@routes.get("/api/v1/_test/ops-missing")
@operations
async def ops_missing(request: web.Request) -> web.Response:
    raise NotFound("Nothing here.")


@pytest.fixture
async def app_config(config: Config, redis_server: RedisServer) -> Config:
    # A Redis database of its own: these budgets are not the suite's.
    url = f"redis://127.0.0.1:{redis_server.port}/{POLICY_DB}"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    return dataclasses.replace(config, redis_url=Secret(url), request_timeout_seconds=1.5,
                               long_poll_timeout_seconds=5.0,
                               rate_limit_login=RateLimit(1000, 60),
                               rate_limit_api=RateLimit(2000, 60),
                               rate_limit_bridge=RateLimit(3000, 60))


class TestReadFromTheRoute:
    async def test_timeout_class_is_the_routes(self, test_client: Any) -> None:
        assert (await test_client.get("/api/v1/_test/slow-default")).status == 504
        assert (await test_client.get("/api/v1/_test/slow-long-poll")).status == 200
        assert (await test_client.get("/api/v1/_test/slow-untimed")).status == 200

    async def test_rate_class_is_the_routes(self, test_client: Any) -> None:
        outside_auth = await test_client.get("/api/v1/things/_test/open")
        assert outside_auth.headers["RateLimit-Limit"] == "1000"  # public: the login budget
        inside_auth = await test_client.get("/api/v1/auth/_test/plain")
        assert inside_auth.headers["RateLimit-Limit"] == "2000"  # declared api
        agent = await test_client.get("/api/v1/_test/agent")
        assert agent.status == 401
        assert agent.headers["RateLimit-Limit"] == "3000"  # agent_only: the bridge budget

    async def test_operations_routes_are_not_limited(self, test_client: Any) -> None:
        response = await test_client.get("/api/v1/_test/ops")
        assert response.status == 200
        assert "RateLimit-Limit" not in response.headers

    async def test_csrf_exemption_is_the_routes(self, test_client: Any) -> None:
        forged = {**COOKIE, "Origin": EVIL}
        refused = await test_client.post("/api/v1/bridge/_test/checked", headers=forged)
        assert refused.status == 403
        assert (await refused.json())["code"] == "csrf_origin_mismatch"
        assert (await test_client.post("/api/v1/_test/exempt", headers=forged)).status == 204

    async def test_operations_routes_read_no_credential(
            self, test_client: Any, mail_sink: Any) -> None:
        session = await signed_up(test_client, mail_sink)
        assert (await (await test_client.get("/api/v1/things/_test/open", headers=session.auth)
                       ).json())["principal"] == "user"
        ops = await test_client.get("/api/v1/_test/ops", headers=session.auth)
        assert (await ops.json())["principal"] is None
        garbage = await test_client.get("/api/v1/_test/ops",
                                        headers={"Authorization": "Basic nonsense"})
        assert garbage.status == 200

    async def test_a_bad_token_is_refused_on_guarded_routes_and_ignored_on_public_ones(
            self, test_client: Any) -> None:
        bad = {"Authorization": "Bearer not-a-token"}
        assert (await test_client.get("/api/v1/auth/_test/me", headers=bad)).status == 401
        assert (await test_client.get("/api/v1/things/_test/open", headers=bad)).status == 200

    async def test_api_keys_are_read_on_agent_routes_wherever_they_are(
            self, test_client: Any, mail_sink: Any) -> None:
        session = await signed_up(test_client, mail_sink)
        _, api_key = await agent_with_key(test_client, session)
        response = await test_client.get("/api/v1/_test/agent", headers=agent_auth(api_key))
        assert response.status == 200
        assert (await response.json())["principal"] == "agent"
        # ...and nowhere else: a key on a public route authenticates no one.
        other = await test_client.get("/api/v1/things/_test/open", headers=agent_auth(api_key))
        assert (await other.json())["principal"] is None

    async def test_probes_that_succeed_are_not_logged_failures_are(
            self, test_client: Any, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="archomata.access")
        assert (await test_client.get("/api/v1/_test/ops")).status == 200
        assert (await test_client.get("/api/v1/_test/ops-missing")).status == 404
        assert (await test_client.get("/api/v1/things/_test/open")).status == 200
        logged = [r.route for r in caplog.records  # type: ignore[attr-defined]
                  if r.name == "archomata.access"]
        assert logged == ["/api/v1/_test/ops-missing", "/api/v1/things/_test/open"]


class TestTheRealRoutes:
    def test_each_route_class_is_declared_by_its_guard(self, config: Config) -> None:
        app = create_app(config)
        policies = {(r.method, r.resource.canonical): declared_policy(r.handler)
                    for r in app.router.routes()
                    if r.resource is not None and r.method not in {"HEAD", "OPTIONS"}}
        assert policies[("GET", "/api/v1/bridge/commands")].timeout is TimeoutClass.LONG_POLL
        assert policies[("GET", "/api/v1/audit-logs/export")].timeout is TimeoutClass.UNTIMED
        assert policies[("POST", "/api/v1/auth/login")].rate is RateClass.LOGIN
        assert policies[("POST", "/api/v1/auth/refresh")].rate is RateClass.REFRESH
        assert policies[("POST", "/api/v1/auth/switch-org")].rate is RateClass.REFRESH
        for ends in (("POST", "/api/v1/auth/logout"), ("POST", "/api/v1/auth/logout-all"),
                     ("DELETE", "/api/v1/auth/sessions/{session_id}")):
            assert policies[ends].rate is None and policies[ends].unlimited
        for path in ("/health/live", "/health/ready", "/metrics", "/api/v1/openapi.json"):
            assert policies[("GET", path)].authn is Authn.NONE
            assert policies[("GET", path)].rate is None
        bridge = [p for (_, path), p in policies.items() if path.startswith("/api/v1/bridge/")]
        assert bridge
        assert all(p.authn is Authn.AGENT and p.csrf_exempt for p in bridge)

    async def test_the_probe_does_not_verify_a_token_it_carries(
            self, client: Any, mail_sink: Any) -> None:
        session = await signed_up(client, mail_sink)
        authenticator = client.app[AUTHENTICATOR]
        calls: list[str] = []
        verify = authenticator.principal

        async def counting(request: web.Request, token: str) -> Any:
            calls.append(request.path)
            return await verify(request, token)

        authenticator.principal = counting
        assert (await client.get("/api/v1/me", headers=session.auth)).status == 200
        for path in ("/health/live", "/metrics", "/api/v1/openapi.json"):
            response = await client.get(path, headers=session.auth)
            assert response.status == 200
            assert "RateLimit-Limit" not in response.headers
            assert response.headers["X-Request-ID"]
        assert calls == ["/api/v1/me"]
        metrics = await (await client.get("/metrics")).text()
        assert 'route="/health/live",status="200"} 1.0' in metrics  # counted, if not logged


def _app_with(config: Config, monkeypatch: pytest.MonkeyPatch, *handlers: Any) -> None:
    table = web.RouteTableDef()
    for n, handler in enumerate(handlers):
        table.post(f"/api/v1/_test/bad{n}")(handler)
    modules = (*app_module.ROUTE_MODULES, SimpleNamespace(routes=table))
    monkeypatch.setattr(app_module, "ROUTE_MODULES", modules)
    create_app(config)


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


class TestRefusals:
    @pytest.mark.parametrize(("declare", "why"), [
        (lambda h: agent_only(csrf_exempt=None)(h), "must be CSRF-exempt"),
        (lambda h: public(csrf_exempt="  ")(h), "needs its reason"),
        (lambda h: authenticated(authn=Authn.OPTIONAL)(h), "refuse a bad one"),
        (lambda h: require_permission("orders:read", authn=Authn.NONE)(h), "refuse a bad one"),
        (lambda h: public(authn=Authn.BEARER)(h), "ignores a bad token"),
        (lambda h: public(authn=Authn.AGENT)(h), "only agent_only routes"),
        (lambda h: agent_only(authn=Authn.BEARER)(h), "must take X-API-Key"),
        (lambda h: public(rate=None)(h), "must be rate limited"),
        (lambda h: public(authn=Authn.NONE, rate=None)(h), "why CSRF is moot"),
        # Answered past the pipeline: only a GET that needs none of it.
        (lambda h: public(probe=True)(h), "answered as a probe"),
        (lambda h: operations(probe=True)(h), "answered as a probe"),
    ])
    def test_create_app_refuses_an_inconsistent_declaration(
            self, config: Config, monkeypatch: pytest.MonkeyPatch, declare: Any,
            why: str) -> None:
        with pytest.raises(RuntimeError, match=why):
            _app_with(config, monkeypatch, declare(fresh(_ok)))

    def test_a_route_outside_api_without_a_guard_is_refused(self, config: Config) -> None:
        app = create_app(config)
        app.router.add_get("/_test/naked", _ok)
        assert policy_problems(app) == ["GET /_test/naked: no guard declares its policy"]

    async def test_a_bad_route_added_after_create_app_stops_the_start(
            self, config: Config) -> None:
        late = web.RouteTableDef()
        late.post("/api/v1/bridge/_test/late")(agent_only(csrf_exempt=None)(fresh(_ok)))
        runner = web.AppRunner(app_with_routes(config, late))
        try:
            with pytest.raises(RuntimeError, match="must be CSRF-exempt"):
                await runner.setup()
        finally:
            # What the start opened before it stopped (the pool, Redis) is closed: the
            # test client aiohttp_client makes would be left open, and its session too.
            await runner.cleanup()

    def test_an_unknown_policy_field_is_a_type_error(self) -> None:
        with pytest.raises(TypeError):
            public(colour="red")(fresh(_ok))

    def test_the_real_routes_are_consistent(self, config: Config) -> None:
        assert policy_problems(create_app(config)) == []
