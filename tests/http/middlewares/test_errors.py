"""Every failure is problem+json with a stable code, and tells nothing internal."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from aiohttp import web
from marshmallow import Schema, fields

from archomata.access.guards import public
from archomata.access.route_policy import RateClass
from archomata.config import Config
from archomata.web.json_io import json_response, load_body

routes = web.RouteTableDef()


class EchoSchema(Schema):
    name = fields.String(required=True)
    count = fields.Integer(required=True)


@routes.post("/api/v1/_test/echo")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def echo(request: web.Request) -> web.Response:
    return json_response(await load_body(request, EchoSchema()))


@routes.get("/api/v1/_test/boom")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail at /srv/archomata/db.py")


@routes.get("/api/v1/_test/slow")
@public(rate=RateClass.API)  # spends no login budget of the suite
async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return json_response({})


@pytest.fixture
def app_config(config: Config) -> Config:
    return dataclasses.replace(config, request_timeout_seconds=0.3, max_body_bytes=2048)


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


class TestProblems:
    async def test_valid_body_passes(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/_test/echo", json={"name": "a", "count": 1})
        assert response.status == 200
        assert await response.json() == {"name": "a", "count": 1}

    async def test_malformed_json_is_400(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/_test/echo", data=b'{"name": ',
                                          headers={"Content-Type": "application/json"})
        await problem(response, 400, "malformed_json")

    async def test_integer_past_64_bits_is_a_stable_400(self, test_client: Any) -> None:
        # The stdlib parser once read these (and a 4,300-digit one raised: a 500).
        response = await test_client.post(
            "/api/v1/_test/echo", data=b'{"name": 5, "count": %d}' % 2 ** 70,
            headers={"Content-Type": "application/json"})
        await problem(response, 400, "number_out_of_range")

    @pytest.mark.parametrize("content_type", [
        "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
    async def test_wrong_content_type_is_415(self, test_client: Any, content_type: str) -> None:
        response = await test_client.post("/api/v1/_test/echo", data=b'{"name": "a"}',
                                          headers={"Content-Type": content_type})
        await problem(response, 415, "unsupported_media_type")

    async def test_validation_failure_is_422_with_fields(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/_test/echo",
                                          json={"name": 5, "extra": True})
        body = await problem(response, 422, "validation_failed")
        assert set(body["errors"]) == {"name", "count", "extra"}

    async def test_non_object_body_is_422(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/_test/echo", json=[1, 2])
        await problem(response, 422, "validation_failed")

    async def test_oversized_body_is_413(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/_test/echo", data=b"x" * 4096,
                                          headers={"Content-Type": "application/json"})
        await problem(response, 413, "payload_too_large")

    async def test_oversized_chunked_body_is_413(self, test_client: Any) -> None:
        async def chunks() -> Any:
            for _ in range(8):
                yield b"x" * 1024

        response = await test_client.post("/api/v1/_test/echo", data=chunks(),
                                          headers={"Content-Type": "application/json"})
        await problem(response, 413, "payload_too_large")

    async def test_unknown_route_is_404(self, test_client: Any) -> None:
        await problem(await test_client.get("/api/v1/nothing-here"), 404, "not_found")

    async def test_wrong_method_is_405(self, test_client: Any) -> None:
        response = await test_client.delete("/api/v1/_test/echo")
        await problem(response, 405, "method_not_allowed")
        assert "POST" in response.headers["Allow"]

    async def test_exception_is_500_without_internals(self, test_client: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
        response = await test_client.get("/api/v1/_test/boom")
        body = await problem(response, 500, "internal_error")
        text = str(body)
        assert "Traceback" not in text
        assert "secret internal detail" not in text
        assert "/srv/" not in text
        logged = [r for r in caplog.records if r.name == "archomata.errors"]
        assert logged
        assert logged[0].request_id == body["request_id"]

    async def test_slow_handler_is_504(self, test_client: Any) -> None:
        await problem(await test_client.get("/api/v1/_test/slow"), 504, "timeout")


class TestRequestId:
    async def test_sane_client_id_is_echoed(self, test_client: Any) -> None:
        response = await test_client.get("/health/live", headers={"X-Request-ID": "abc-123-XYZ"})
        assert response.headers["X-Request-ID"] == "abc-123-XYZ"

    @pytest.mark.parametrize("offered",
                             ["short", "x" * 200, "has space in it", "<script>1</script>"])
    async def test_insane_client_id_is_replaced(self, test_client: Any, offered: str) -> None:
        response = await test_client.get("/health/live", headers={"X-Request-ID": offered})
        assert response.headers["X-Request-ID"] != offered
        assert len(response.headers["X-Request-ID"]) == 32
