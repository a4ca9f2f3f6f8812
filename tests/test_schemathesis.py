"""Schemathesis against the live service (issue 11, point 9): `archomata serve` on a port
with the harness's PostgreSQL, Redis and SMTP, fuzzed from its own OpenAPI document as
an org administrator (the bridge as an agent), failing on any server error. A short
budget: it is here so the next 500 is caught in `make test`, not to explore for hours.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from archomata.ops.devservers import free_port
from tests.factories import agent_with_key, signed_up, trading_account

# Per run; two runs at once (user routes, bridge routes). ARCHOMATA_FUZZ_SECONDS=300 for
# a longer hunt.
BUDGET_SECONDS = int(os.environ.get("ARCHOMATA_FUZZ_SECONDS", "20"))
# One worker each: on CPython 3.11, ast.parse (which hypothesis calls to describe a
# lambda) fails across threads ("AST constructor recursion depth mismatch").
# Routes that end the caller's session: fuzzing them first would leave the rest a 401.
SIGN_OUTS = "^/api/v1/auth/(logout|logout-all)$"


@pytest.fixture
async def live(environ: dict[str, str], tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = await asyncio.create_subprocess_exec(  # a real process, as deployed
        sys.executable, "-m", "archomata", "serve", stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **environ, "ARCHOMATA_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        await _until_ready(base)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        log.close()


async def _until_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("archomata serve never became ready")


def _schemathesis(workdir: Path, base: str, header: str,
                  *filters: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json",
         "--url", base, "--header", header, "--checks", "not_a_server_error",
         "--max-examples", "10", "--max-time", str(BUDGET_SECONDS), "--workers", "1",
         "--request-timeout", "10", "--seed", "11", "--suppress-health-check", "all",
         "--warnings", "off", "--no-color", *filters],
        capture_output=True, text=True, timeout=BUDGET_SECONDS * 4, cwd=workdir,  # its cache
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""})


@pytest.mark.slow
class TestSchemathesis:
    async def test_the_live_service_answers_no_server_error(
            self, live: str, mail_sink: Any, tmp_path: Path) -> None:
        async with aiohttp.ClientSession(
                base_url=live, cookie_jar=aiohttp.DummyCookieJar()) as client:
            admin = await signed_up(client, mail_sink)
            agent, api_key = await agent_with_key(client, admin)
            await trading_account(client, admin, agent_id=agent["id"])
        for name in ("user", "bridge"):
            (tmp_path / name).mkdir()
        user_routes, bridge_routes = await asyncio.gather(
            asyncio.to_thread(_schemathesis, tmp_path / "user", live,
                              f"Authorization: Bearer {admin.access}",
                              "--exclude-path-regex", "^/api/v1/bridge/",
                              "--exclude-path-regex", SIGN_OUTS),
            asyncio.to_thread(_schemathesis, tmp_path / "bridge", live, f"X-API-Key: {api_key}",
                              "--include-path-regex", "^/api/v1/bridge/",
                              # The long poll holds each example up to 30 s: it would eat
                              # the budget. Its one parameter is fuzzed in-process.
                              "--exclude-operation-id", "poll_commands"))
        for run in (user_routes, bridge_routes):
            assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
            generated = re.search(r"(\d+) generated", run.stdout)
            assert generated and int(generated.group(1)) > 100, run.stdout[-2000:]
