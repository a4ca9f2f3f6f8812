"""`GET /api/v1/docs`: the interactive reference, its strict policy, its own assets, and
the page as Chromium shows it (Playwright driving Debian's chromium, no browser download)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from archomata.http import server
from archomata.ops import api_docs
from tests.ops.test_dev import CHROMIUM_ARGS, chromium


def directives(policy: str) -> dict[str, str]:
    return {part.strip().split(" ", 1)[0]: part.strip().partition(" ")[2]
            for part in policy.split(";") if part.strip()}


class TestPage:
    async def test_the_page_loads_swagger_ui_and_its_start_script_from_the_service(
            self, client: Any) -> None:
        response = await client.get("/api/v1/docs")
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
        assert '<script src="/api/v1/docs/assets/swagger-ui-bundle.js">' in page
        assert '<script src="/api/v1/docs/assets/start.js">' in page
        assert "<script>" not in page  # no inline script: the policy allows none
        assert "http" not in page.lower().replace("http-equiv", "")  # nothing from elsewhere

    async def test_the_page_policy_allows_its_own_assets_and_nothing_else(
            self, client: Any) -> None:
        response = await client.get("/api/v1/docs")
        policy = directives(response.headers["Content-Security-Policy"])
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
        assert policy["style-src"] == "'self'"
        assert policy["img-src"] == "'self' data:"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["base-uri"] == "'none'"
        assert policy["form-action"] == "'none'"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"

    async def test_the_api_keeps_its_own_policy(self, client: Any) -> None:
        for path in ("/api/v1/openapi.json", "/api/v1/me", "/api/v1/docs/assets/nothing"):
            response = await client.get(path)
            assert response.headers["Content-Security-Policy"] == (
                "default-src 'none'; frame-ancestors 'none'"), path

    async def test_the_start_script_reads_this_services_document(self, client: Any) -> None:
        response = await client.get("/api/v1/docs/assets/start.js")
        assert response.status == 200
        assert response.content_type == "text/javascript"
        script = await response.text()
        assert 'url: "/api/v1/openapi.json"' in script
        assert "validatorUrl: null" in script  # the default badge is another site's image

    @pytest.mark.parametrize(("name", "content_type"), sorted(api_docs.PACKAGED.items()))
    async def test_swagger_uis_files_come_from_the_installed_package(
            self, client: Any, name: str, content_type: str) -> None:
        response = await client.get(f"/api/v1/docs/assets/{name}")
        assert response.status == 200
        assert response.content_type == content_type
        assert await response.read() == (api_docs.swagger_ui_dir() / name).read_bytes()
        assert response.headers["Cache-Control"] == "no-cache"
        again = await client.get(f"/api/v1/docs/assets/{name}",
                                 headers={"If-None-Match": response.headers["ETag"]})
        assert again.status == 304

    @pytest.mark.parametrize("name", [
        "swagger-editor-bundle.js", "index.css", "..%2F..%2Fpyvenv.cfg", "..",
        "swagger-ui-bundle.js.map", "%2Fetc%2Fpasswd", "LICENSE"])
    async def test_any_other_name_is_a_404_problem(self, client: Any, name: str) -> None:
        response = await client.get(f"/api/v1/docs/assets/{name}")
        assert response.status == 404
        assert response.content_type == "application/problem+json"

    async def test_the_reference_is_in_the_openapi_document(self, client: Any) -> None:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        assert "get" in spec["paths"]["/api/v1/docs"]
        assert spec["paths"]["/api/v1/docs"]["get"]["x-access"]


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[str]:
    runner = await server.start(create_app(config), config, host="127.0.0.1", port=0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.mark.slow
async def test_chromium_shows_every_operation_with_no_policy_violation(
        config: Config) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="archomata-chromium-")
    try:
        async with serving(config) as url, async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                console: list[str] = []
                page.on("console", lambda message: console.append(
                    f"{message.type}: {message.text}"))
                failed: list[str] = []
                page.on("requestfailed", lambda request: failed.append(request.url))
                await page.add_init_script(VIOLATIONS)
                await page.goto(f"{url}/api/v1/docs")
                login = page.locator(".opblock-summary-path[data-path='/api/v1/auth/login']")
                await login.wait_for(state="visible", timeout=30_000)
                shown = await page.locator(".opblock").count()
                await login.click()  # opened: its schemas, examples and icons drawn too
                await page.locator(".opblock.is-open .opblock-body").first.wait_for(
                    state="visible", timeout=10_000)
                violations = await page.evaluate("window.__violations")
                title = await page.locator(".info .title").inner_text()
            finally:
                await browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert "Archomata API" in title
    spec = create_app(config)[keys.OPENAPI]
    assert shown == sum(len(operations) for operations in spec["paths"].values())
    assert violations == [], violations
    assert not [line for line in console if "Content Security Policy" in line], console
    assert not [line for line in console if line.startswith("error")], console
    assert failed == [], failed
