from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from archomata.app import create_app
from archomata.config import Config
from archomata.ops.devservers import RedisServer, free_port


class TestLive:
    async def test_live_is_ok(self, client: Any) -> None:
        response = await client.get("/health/live")
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
        # As json_response answers, though the probe's answer is made once (health.py).
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"


class TestReady:
    async def test_ready_when_everything_is_up(self, client: Any) -> None:
        response = await client.get("/health/ready")
        assert response.status == 200
        body = await response.json()
        assert body["checks"] == {"postgres": "ok", "redis": "ok", "schema": "ok"}

    async def test_ready_follows_redis_down_and_back_without_restart(
            self, aiohttp_client: Any, config: Config, workdir: Path) -> None:
        redis = RedisServer(workdir / "redis-ready", free_port(), durable=False)
        redis.start()
        try:
            from archomata.config import Secret
            app = create_app(dataclasses.replace(config, redis_url=Secret(redis.url)))
            client = await aiohttp_client(app)
            assert (await client.get("/health/ready")).status == 200
            await asyncio.to_thread(redis.stop)
            down = await client.get("/health/ready")
            assert down.status == 503
            assert (await down.json())["checks"]["redis"] == "unavailable"
            await asyncio.to_thread(redis.start)
            assert (await client.get("/health/ready")).status == 200
        finally:
            redis.stop()


class TestMetrics:
    async def test_metrics_count_requests_by_route_and_show_the_pool(self, client: Any) -> None:
        await client.get("/health/live")
        await client.get("/no/such/route")
        text = await (await client.get("/metrics")).text()
        assert 'archomata_http_requests_total{method="GET",route="/health/live",status="200"}' \
            in text
        assert 'route="unmatched",status="404"' in text
        assert "archomata_http_request_duration_seconds_bucket" in text
        assert "archomata_db_pool_size" in text
        assert "archomata_db_pool_free" in text
        assert "archomata_exports_running 0.0" in text


class TestOpenApi:
    async def test_every_api_route_is_documented(self, client: Any) -> None:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        assert spec["openapi"].startswith("3.1")
        routes = {(r.method.lower(), r.resource.canonical)
                  for r in client.app.router.routes()
                  if r.resource and r.resource.canonical.startswith("/api/v1")
                  and r.method not in {"HEAD", "OPTIONS"}}
        documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
        assert routes <= documented
        assert routes

    async def test_a_way_in_documents_both_of_its_answers(self, client: Any) -> None:
        """A session, or a second factor to prove: login and accept-invitation answer 200
        with one of the two shapes."""
        spec = await (await client.get("/api/v1/openapi.json")).json()
        for path in ("/api/v1/auth/login", "/api/v1/auth/accept-invitation"):
            answer = spec["paths"][path]["post"]["responses"]["200"]
            assert answer["content"]["application/json"]["schema"] == {"oneOf": [
                {"$ref": "#/components/schemas/LoginResult"},
                {"$ref": "#/components/schemas/MfaRequired"}]}, path
        mfa = spec["components"]["schemas"]["MfaRequired"]
        assert set(mfa["required"]) == {"mfa_required", "mfa_token", "methods"}
        assert mfa["properties"]["methods"]["type"] == "array"

    async def test_a_routes_own_problems_are_documented(self, client: Any) -> None:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        responses = spec["paths"]["/api/v1/audit-logs/export"]["get"]["responses"]
        assert "too_many_exports" in responses["429"]["description"]
        assert "exports_busy" in responses["503"]["description"]
        problem = responses["429"]["content"]["application/problem+json"]["schema"]
        assert problem == {"$ref": "#/components/schemas/Problem"}
        assert set(spec["paths"]["/api/v1/org"]["get"]["responses"]) == {"default", "200"}
        search = spec["paths"]["/api/v1/audit-logs"]["get"]["responses"]
        for status, code in (("422", "from"), ("429", "too_many_searches"),
                             ("503", "search_too_broad"), ("504", "search_timeout")):
            assert code in search[status]["description"], status
