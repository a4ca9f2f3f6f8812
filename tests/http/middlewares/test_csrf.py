"""Cross-site requests cannot change anything: Origin/Referer checks and form body types."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from archomata.access.guards import public
from archomata.access.route_policy import AGENT_CSRF_REASON

FRONTEND = "http://localhost:5173"
EVIL = "https://evil.example"
COOKIE = {"Cookie": "archomata_refresh=some-refresh-token"}

routes = web.RouteTableDef()


@routes.post("/api/v1/_test/change")
@routes.delete("/api/v1/_test/change")
@routes.get("/api/v1/_test/change")
@public
async def change(request: web.Request) -> web.Response:
    return web.Response(status=204)  # never reads the body


@routes.post("/api/v1/auth/_test/login")
@public
async def login(request: web.Request) -> web.Response:
    return web.Response(status=204)


@routes.post("/api/v1/bridge/_test/heartbeat")
@public(csrf_exempt=AGENT_CSRF_REASON)  # as the bridge's routes are
async def heartbeat(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def refused(response: Any) -> None:
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert (await response.json())["code"] == "csrf_origin_mismatch"


class TestOrigin:
    async def test_cross_site_post_with_cookie_and_foreign_origin_is_refused(
            self, test_client: Any) -> None:
        await refused(await test_client.post("/api/v1/_test/change",
                                             headers={**COOKIE, "Origin": EVIL}))

    async def test_foreign_referer_without_origin_is_refused(self, test_client: Any) -> None:
        await refused(await test_client.post(
            "/api/v1/_test/change", headers={**COOKIE, "Referer": f"{EVIL}/page?x=1"}))

    async def test_origin_null_is_refused(self, test_client: Any) -> None:
        await refused(await test_client.post("/api/v1/_test/change",
                                             headers={"Origin": "null"}))

    async def test_cookie_with_neither_header_is_refused(self, test_client: Any) -> None:
        await refused(await test_client.delete("/api/v1/_test/change", headers=COOKIE))

    async def test_bearer_style_request_with_neither_header_passes(
            self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/_test/change",
                                          headers={"Authorization": "Bearer not-checked-here"})
        assert response.status == 204

    async def test_foreign_origin_is_refused_without_cookie_so_login_csrf_fails(
            self, test_client: Any) -> None:
        await refused(await test_client.post("/api/v1/auth/_test/login", json={},
                                             headers={"Origin": EVIL}))

    @pytest.mark.parametrize("origin", [
        "https://localhost:5173", "http://localhost:5174", "http://localhost",
        "http://localhost:5173.evil.example", "http://localhost:5173/path", "not an origin"])
    async def test_near_misses_of_the_frontend_origin_are_refused(
            self, test_client: Any, origin: str) -> None:
        await refused(await test_client.post("/api/v1/_test/change", headers={"Origin": origin}))

    @pytest.mark.parametrize("headers", [
        {"Origin": FRONTEND}, {"Origin": "HTTP://LOCALHOST:5173"},
        {"Referer": f"{FRONTEND}/accounts/1?tab=orders"}])
    async def test_frontend_origin_with_cookie_passes(self, test_client: Any,
                                                      headers: dict[str, str]) -> None:
        response = await test_client.post("/api/v1/_test/change", headers={**COOKIE, **headers})
        assert response.status == 204

    async def test_origin_wins_over_referer(self, test_client: Any) -> None:
        await refused(await test_client.post("/api/v1/_test/change", headers={
            "Origin": EVIL, "Referer": f"{FRONTEND}/"}))

    async def test_safe_methods_are_not_checked(self, test_client: Any) -> None:
        response = await test_client.get("/api/v1/_test/change",
                                         headers={**COOKIE, "Origin": EVIL})
        assert response.status == 204

    async def test_bridge_routes_are_exempt(self, test_client: Any) -> None:
        response = await test_client.post("/api/v1/bridge/_test/heartbeat",
                                          headers={**COOKIE, "Origin": EVIL})
        assert response.status == 204


class TestFormBodies:
    @pytest.mark.parametrize("content_type", [
        "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x", "Text/Plain"])
    @pytest.mark.parametrize("headers", [{"Origin": FRONTEND}, {}])
    async def test_form_content_types_are_refused_even_if_the_body_is_never_read(
            self, test_client: Any, content_type: str, headers: dict[str, str]) -> None:
        response = await test_client.post("/api/v1/_test/change", data=b'{"a": 1}',
                                          headers={**headers, "Content-Type": content_type})
        assert response.status == 415
        assert (await response.json())["code"] == "unsupported_media_type"

    async def test_json_and_bodiless_requests_pass(self, test_client: Any) -> None:
        assert (await test_client.post("/api/v1/_test/change", json={"a": 1},
                                       headers={"Origin": FRONTEND})).status == 204
        assert (await test_client.post("/api/v1/_test/change")).status == 204
