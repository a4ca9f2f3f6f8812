"""CORS: exactly the configured origins, with credentials, for the SPA's methods and headers."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from archomata.access.guards import policy_problems
from archomata.http.cors import allowed_origins, origin_of

FRONTEND = "http://localhost:5173"


async def preflight(client: Any, origin: str, method: str = "POST",
                    headers: str = "content-type,authorization,x-request-id") -> Any:
    return await client.options("/api/v1/auth/login", headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers})


class TestPreflight:
    async def test_frontend_origin_is_allowed_with_credentials(self, client: Any) -> None:
        response = await preflight(client, FRONTEND)
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        assert response.headers["Access-Control-Allow-Methods"] == "POST"
        allowed = {h.strip().lower()
                   for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert allowed == {"content-type", "authorization", "x-request-id"}

    @pytest.mark.parametrize("origin", ["https://evil.example", "null", "*",
                                        "http://localhost:5173.evil.example"])
    async def test_other_origins_get_no_allow_origin(self, client: Any, origin: str) -> None:
        response = await preflight(client, origin)
        assert "Access-Control-Allow-Origin" not in response.headers
        assert response.status == 403

    async def test_a_refused_origin_is_named_in_the_log_and_not_in_the_answer(
            self, client: Any, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="archomata.http.cors"):
            response = await preflight(client, "https://evil.example")
            allowed = await preflight(client, FRONTEND)
        assert allowed.status == 200
        [record] = [r for r in caplog.records if r.name == "archomata.http.cors"]
        line = record.getMessage()
        assert "'https://evil.example'" in line
        assert "ARCHOMATA_FRONTEND_ORIGINS" in line and FRONTEND in line
        assert record.origin == "https://evil.example"  # type: ignore[attr-defined]
        assert response.status == 403
        assert response.content_type == "application/problem+json"
        body = await response.text()
        for leak in ("evil", "localhost", "ARCHOMATA", "CORS", "origin"):
            assert leak not in body, body

    async def test_an_answered_preflight_is_no_access_line_a_refused_one_is(
            self, client: Any, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="archomata.access"):
            allowed = await preflight(client, FRONTEND)
            refused = await preflight(client, "https://evil.example")
            followed = await client.post("/api/v1/auth/login", json={},
                                         headers={"Origin": FRONTEND})
        assert (allowed.status, refused.status) == (200, 403)
        lines = [(r.method, r.status) for r in caplog.records  # type: ignore[attr-defined]
                 if r.name == "archomata.access"]
        assert lines == [("OPTIONS", 403), ("POST", followed.status)]

    @pytest.mark.parametrize(("method", "headers"), [
        ("TRACE", "content-type"), ("HEAD", "content-type"), ("POST", "x-api-key"),
        ("POST", "cookie"), ("POST", "x-custom")])
    async def test_methods_and_headers_beyond_the_spas_are_refused(
            self, client: Any, method: str, headers: str) -> None:
        response = await preflight(client, FRONTEND, method, headers)
        assert "Access-Control-Allow-Origin" not in response.headers

    async def test_preflight_routes_need_no_access_rule(self, client: Any) -> None:
        assert any(r.method == "OPTIONS" for r in client.app.router.routes())
        assert policy_problems(client.app) == []


class TestActualRequests:
    async def test_frontend_origin_reads_the_answer_and_its_headers(self, client: Any) -> None:
        response = await client.get("/api/v1/openapi.json", headers={"Origin": FRONTEND})
        assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
        assert response.headers["Access-Control-Allow-Credentials"] == "true"
        exposed = {h.lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert exposed == {"x-request-id", "retry-after", "ratelimit-limit",
                           "ratelimit-remaining", "ratelimit-reset"}

    async def test_errors_are_readable_by_the_frontend(self, client: Any) -> None:
        response = await client.get("/api/v1/me", headers={"Origin": FRONTEND})
        assert response.status == 401
        assert response.headers["Access-Control-Allow-Origin"] == FRONTEND

    @pytest.mark.parametrize("origin", ["https://evil.example", "null"])
    async def test_other_origins_are_never_reflected(self, client: Any, origin: str) -> None:
        response = await client.get("/api/v1/openapi.json", headers={"Origin": origin})
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers


class TestOrigins:
    @pytest.mark.parametrize(("url", "origin"), [
        ("https://App.Example/path?q=1", "https://app.example"),
        ("https://app.example:443/", "https://app.example"),
        ("http://app.example:8080", "http://app.example:8080"),
        ("http://[::1]:5173/x", "http://[::1]:5173"),
        ("ftp://app.example", None), ("null", None), ("*", None), ("http://", None),
        ("http://app.example:99999", None)])
    def test_origin_of_normalises_urls(self, url: str, origin: str | None) -> None:
        assert origin_of(url) == origin

    def test_a_wildcard_or_null_can_never_be_configured(self) -> None:
        for bad in ("*", "null", "https://app.example/path"):
            with pytest.raises(ValueError, match="bare http"):
                allowed_origins((bad,))
