"""`make run` as a newcomer runs it: `archomata dev` from a checkout in a private home
(pytest's tmp_path, under the 0700 /tmp/pytest-of-<user>), then the SPA journey in a real
Chromium against the address it printed.

The SPA is served on the default FRONTEND_URL, http://localhost:5173 (on another
localhost port when 5173 is taken): the same site as the printed http://localhost:PORT,
so the browser sends the SameSite=Strict refresh cookie back; with the 127.0.0.1 it
used to print, login worked and refresh never did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from archomata.identity.web import REFRESH_COOKIE
from archomata.ops.dev import DEMO_ORG_ADMIN
from archomata.ops.devroot import reachable, server_user
from archomata.ops.devservers import free_port

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FRONTEND_PORT = 5173
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class DevRun:
    proc: subprocess.Popen[str]
    output: list[str]
    checkout: Path
    url: str
    password: str
    frontend: str


def _frontend_port() -> int:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", DEFAULT_FRONTEND_PORT))
    except OSError:
        return free_port()  # taken (a parallel run, a dev server): any localhost port will do
    return DEFAULT_FRONTEND_PORT


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as the banner says
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
    # Whatever is left of its group (servers it started, if it died before stopping them).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevRun]:
    home = tmp_path_factory.mktemp("home")
    home.chmod(0o700)
    checkout = home / "archomata"
    checkout.mkdir()
    frontend_port, port = _frontend_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHOMATA_")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", ARCHOMATA_PORT=str(port))
    if frontend_port != DEFAULT_FRONTEND_PORT:
        env["ARCHOMATA_FRONTEND_URL"] = f"http://localhost:{frontend_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "archomata", "dev"], cwd=checkout, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    output: list[str] = []
    banner = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.strip().startswith("Mails (verification"):  # the banner's last line
                banner.set()
        banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        banner.wait(240)
        text = "".join(output)
        served = re.search(r"Archomata is serving on (\S+)", text)
        password = re.search(rf"administrator: {re.escape(DEMO_ORG_ADMIN)} / (\S+)", text)
        assert served and password, f"`archomata dev` printed no banner:\n{text[-3000:]}"
        run = DevRun(proc, output, checkout, served.group(1), password.group(1),
                     f"http://localhost:{frontend_port}")
        _wait_ready(run)
        yield run
    finally:
        _stop(proc)
        reader.join(10)  # to the end of its output, then the pipe is closed
        if proc.stdout is not None:
            proc.stdout.close()
        for link in (checkout / ".local" / "postgres", checkout / ".local" / "redis"):
            if link.is_symlink():  # moved out of the private home: see archomata/ops/devroot.py
                shutil.rmtree(link.resolve(), ignore_errors=True)


def _wait_ready(run: DevRun) -> None:
    async def ready() -> bool:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(f"{run.url}/health/ready") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

    deadline = time.monotonic() + 60
    while not asyncio.run(ready()):
        assert run.proc.poll() is None, "".join(run.output)[-3000:]
        assert time.monotonic() < deadline, "never ready:\n" + "".join(run.output)[-3000:]
        time.sleep(0.3)


@pytest.mark.slow
async def test_make_run_serves_from_a_private_home_on_the_address_it_prints(
        dev_run: DevRun) -> None:
    assert dev_run.url == f"http://localhost:{dev_run.url.rsplit(':', 1)[1]}"
    login = {"email": DEMO_ORG_ADMIN, "password": dev_run.password}
    async with aiohttp.ClientSession() as http, http.post(
            f"{dev_run.url}/api/v1/auth/login", json=login) as response:
        assert response.status == 200, await response.text()
    assert "Permission denied" not in "".join(dev_run.output)
    assert dev_run.checkout.parent.stat().st_mode & 0o777 == 0o700  # left private
    user = server_user()
    if user is not None:  # root: the servers' data is where `nobody` reaches it
        for name in ("postgres", "redis"):
            link = dev_run.checkout / ".local" / name
            assert link.is_symlink()
            assert reachable(link.resolve(), user)


SPA = """<!doctype html>
<title>SPA</title>
<script>
const API = %s;
let access = null;
async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (access) headers["Authorization"] = "Bearer " + access;
  const response = await fetch(API + "/api/v1" + path, {
    method, headers, credentials: "include",
    body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (data && data.access_token) access = data.access_token;
  return {status: response.status, data};
}
window.login = (email, password) => call("POST", "/auth/login", {email, password});
window.refresh = () => { access = null; return call("POST", "/auth/refresh"); };
window.me = () => call("GET", "/me");
window.logout = () => call("POST", "/auth/logout");
</script>
"""


def chromium() -> str:
    found = shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium",) if Path(p).exists()), None)
    if found:
        return found
    reason = ("no chromium on PATH or at /usr/bin/chromium, and it cannot be installed "
              "here: `make test` installs Debian's (.ci/install-chromium) when run as root "
              "with apt-get")
    if os.environ.get("ARCHOMATA_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}; ARCHOMATA_REQUIRE_BROWSER is set (CI) so this test must run")
    pytest.skip(reason)


@pytest.fixture
async def spa(dev_run: DevRun) -> AsyncIterator[str]:
    app = web.Application()
    page = SPA % json.dumps(dev_run.url)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(dev_run.frontend.rsplit(":", 1)[1])).start()
    yield dev_run.frontend + "/"
    await runner.cleanup()


@pytest.mark.slow
async def test_the_spa_logs_in_refreshes_and_logs_out_in_chromium(
        dev_run: DevRun, spa: str) -> None:
    executable = chromium()
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="archomata-chromium-")
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.goto(spa)
                journey = await _journey(page, dev_run.password)
            finally:
                await browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert journey["login"]["status"] == 200, journey
    assert journey["cookie"] is not None and journey["cookie"]["httpOnly"], journey
    assert journey["refreshed"]["status"] == 200, journey  # the refresh cookie came back
    assert journey["refreshed"]["data"]["access_token"] != journey["login"]["data"]["access_token"]
    assert journey["me"]["status"] == 200, journey
    assert journey["me"]["data"]["user"]["email"] == DEMO_ORG_ADMIN
    assert journey["logout"]["status"] == 204, journey
    assert journey["cookie_after_logout"] is None, journey
    assert journey["refresh_after_logout"]["status"] == 401, journey
    # Not just a cookie dropped by the browser: the session itself is dead.
    assert journey["replayed_cookie"]["status"] == 401, journey


async def _journey(page: Any, password: str) -> dict[str, Any]:
    async def refresh_cookie() -> Any:
        cookies = await page.context.cookies()
        return next((c for c in cookies if c["name"] == REFRESH_COOKIE), None)

    seen: dict[str, Any] = {}
    seen["login"] = await page.evaluate("([e, p]) => login(e, p)", [DEMO_ORG_ADMIN, password])
    seen["cookie"] = await refresh_cookie()
    seen["refreshed"] = await page.evaluate("refresh()")
    seen["me"] = await page.evaluate("me()")
    last_cookie = await refresh_cookie()
    seen["logout"] = await page.evaluate("logout()")
    seen["cookie_after_logout"] = await refresh_cookie()
    seen["refresh_after_logout"] = await page.evaluate("refresh()")
    if last_cookie is not None:
        await page.context.add_cookies([last_cookie])
    seen["replayed_cookie"] = await page.evaluate("refresh()")
    return seen


def _until_output(run: DevRun, wanted: str, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while wanted not in (text := "".join(run.output)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return text


def _bare_env(run: DevRun) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHOMATA_")}
    env.update(PYTHONPATH=str(REPO), ARCHOMATA_PORT=run.url.rsplit(":", 1)[1])
    return env


@pytest.mark.slow
def test_dev_env_lets_the_other_commands_reach_the_stack(dev_run: DevRun) -> None:
    archomata = f"{shlex.quote(sys.executable)} -m archomata"
    env = _bare_env(dev_run)
    alone = subprocess.run(f"{archomata} audit verify", shell=True, cwd=dev_run.checkout,
                           env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "is required" in alone.stderr  # what it was
    exports = subprocess.run(f"{archomata} dev env", shell=True, cwd=dev_run.checkout,
                             env=env, capture_output=True, text=True, timeout=60)
    assert exports.returncode == 0, exports.stderr
    assert "development secrets" in exports.stdout and "never to be used elsewhere" in (
        exports.stdout)
    backup = dev_run.checkout / "dev.backup"
    joined = subprocess.run(
        ["bash", "-c", f'eval "$({archomata} dev env)" && {archomata} audit verify && '
                       f'{archomata} backup --output {shlex.quote(str(backup))}'],
        cwd=dev_run.checkout, env=env, capture_output=True, text=True, timeout=120)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert backup.stat().st_size > 0


@pytest.mark.slow
async def test_the_console_is_readable_with_one_serving_url(dev_run: DevRun) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{dev_run.url}/api/v1/auth/login", headers={
                "Origin": dev_run.frontend, "Access-Control-Request-Method": "POST"}) as pre:
            assert pre.status == 200
        async with http.get(f"{dev_run.url}/api/v1/me") as me:
            assert me.status == 401
    text = _until_output(dev_run, "method=GET route=/api/v1/me status=401")
    assert "archomata.access  request method=GET route=/api/v1/me status=401" in text
    assert "method=OPTIONS" not in text  # a preflight is no access line
    assert not [line for line in text.splitlines() if line.lstrip().startswith("{")]
    port = dev_run.url.rsplit(":", 1)[1]
    served = set(re.findall(rf"https?://[^/\s'\"]+:{port}\b", text))
    assert served == {dev_run.url}, served  # the banner's, the README's, and no other
    assert "Login limits are relaxed for development: 100 logins a minute" in text


def _ipv6_loopback() -> bool:
    """Whether this machine has ::1 (named localhost in /etc/hosts or not: a browser
    tries it for localhost either way)."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_localhost_is_served_on_every_loopback_address_the_machine_has(
        dev_run: DevRun) -> None:
    port = int(dev_run.url.rsplit(":", 1)[1])
    expected = {"127.0.0.1"} | ({"::1"} if _ipv6_loopback() else set())
    answering: set[str] = set()
    for address in ("127.0.0.1", "::1"):
        try:
            with socket.create_connection((address, port), timeout=5):
                answering.add(address)
        except OSError:
            pass
    assert answering == expected


@pytest.mark.slow
async def test_login_limits_are_relaxed(dev_run: DevRun) -> None:
    wrong = {"email": "nobody@demo.archomata.local", "password": "not the password"}
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(15):  # production's defaults refuse the 11th
            async with http.post(f"{dev_run.url}/api/v1/auth/login", json=wrong) as answer:
                statuses.append(answer.status)
    assert set(statuses) == {401}, statuses
