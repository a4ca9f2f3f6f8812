"""The `archomata` command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from archomata.ops.devservers import DatabaseUrls, PostgresServer, free_port
from tests.conftest import make_database
from tests.factories import login, register, strong_password, unique_email


def archomata(*args: str, env: dict[str, str],
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archomata", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


class TestMigrate:
    async def test_migrate_applies_then_has_nothing_to_do(
            self, postgres: PostgresServer, environ: dict[str, str]) -> None:
        urls = await make_database(postgres, "cli_migrate", migrated=False)
        env = {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
               "ARCHOMATA_DATABASE_OWNER_URL": urls.owner}
        first = await asyncio.to_thread(archomata, "migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "migrations applied: 0" not in first.stdout
        second = await asyncio.to_thread(archomata, "migrate", env=env)
        assert second.stdout.strip() == "migrations applied: 0"


class TestServe:
    async def test_serve_refuses_an_unmigrated_database(
            self, postgres: PostgresServer, environ: dict[str, str]) -> None:
        urls = await make_database(postgres, "cli_unmigrated", migrated=False)
        env = {**environ, "ARCHOMATA_DATABASE_URL": urls.owner,
               "ARCHOMATA_DATABASE_OWNER_URL": urls.owner, "ARCHOMATA_PORT": "0"}
        result = await asyncio.to_thread(archomata, "serve", env=env)
        assert result.returncode == 3
        assert "archomata migrate" in result.stderr

    async def test_production_refuses_to_serve_as_the_schema_owner(
            self, environ: dict[str, str], database: DatabaseUrls) -> None:
        env = {**environ, "ARCHOMATA_DATABASE_URL": database.owner, "ARCHOMATA_PORT": "0"}
        result = await asyncio.to_thread(archomata, "serve", env=env)
        assert result.returncode == 2, result.stderr
        # The harness's owner, as a typical one: it owns the tables and bypasses RLS.
        assert "'archomata_owner' owns tables" in result.stderr
        assert "'archomata_owner' has BYPASSRLS" in result.stderr
        assert "ARCHOMATA_DATABASE_URL" in result.stderr
        assert "Traceback" not in result.stderr

    async def test_development_serves_as_the_schema_owner_with_a_warning(
            self, environ: dict[str, str], database: DatabaseUrls) -> None:
        live, stderr = await _serve_until_live({
            **environ, "ARCHOMATA_ENV": "development",
            "ARCHOMATA_DATABASE_URL": database.owner})
        assert live, stderr
        assert "'archomata_owner' owns tables" in stderr
        assert "row-level security is not enforced" in stderr

    async def test_production_serves_as_the_runtime_role(
            self, environ: dict[str, str]) -> None:
        live, stderr = await _serve_until_live(environ)
        assert live, stderr
        assert "row-level security is not enforced" not in stderr

    @pytest.mark.parametrize(("variable", "value"), [
        ("ARCHOMATA_JWT_SECRETS", ""), ("ARCHOMATA_JWT_SECRETS", "k:short"),
        ("ARCHOMATA_DATA_KEY", ""), ("ARCHOMATA_DATA_KEY", "dG9vIHNob3J0")])
    async def test_production_without_strong_secrets_stops_naming_the_variable(
            self, environ: dict[str, str], variable: str, value: str) -> None:
        result = await asyncio.to_thread(archomata, "serve", env={**environ, variable: value})
        assert result.returncode == 2
        assert variable in result.stderr
        assert "Traceback" not in result.stderr


async def _serve_until_live(environ: dict[str, str], seconds: float = 60) -> tuple[bool, str]:
    """Runs `archomata serve` until /health/live answers 200 (or it ends, or `seconds`
    pass), then stops it: whether it answered, and what it wrote to stderr."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "archomata", "serve", env={**environ, "ARCHOMATA_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    loop, live = asyncio.get_running_loop(), False
    deadline = loop.time() + seconds
    try:
        async with aiohttp.ClientSession() as http:
            while not live and proc.returncode is None and loop.time() < deadline:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/health/live") as response:
                        live = response.status == 200
                if not live:
                    await asyncio.sleep(0.2)
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    return live, stderr.decode()


class TestCreateAdmin:
    async def test_creates_a_platform_administrator_who_can_log_in(
            self, client: Any, environ: dict[str, str]) -> None:
        email, password = unique_email("cli-admin"), strong_password()
        result = await asyncio.to_thread(
            archomata, "create-admin", "--email", email,
            env={**environ, "ARCHOMATA_ADMIN_PASSWORD": password})
        assert result.returncode == 0, result.stderr
        assert password not in result.stdout + result.stderr
        session = await login(client, email, password)
        assert session.body["org"] is None
        assert session.body["user"]["platform_role"] == "platform_administrator"

    async def test_does_not_re_key_an_account_that_only_folds_to_the_email(
            self, client: Any, environ: dict[str, str], mail_sink: Any) -> None:
        local = secrets.token_hex(4)
        email, password, _ = await register(client, mail_sink,
                                            email=f"strasse-{local}@example.test")
        result = await asyncio.to_thread(
            archomata, "create-admin", "--email", f"straße-{local}@example.test",
            env={**environ, "ARCHOMATA_ADMIN_PASSWORD": strong_password()})
        assert result.returncode == 1
        assert "exact address" in result.stderr and "Traceback" not in result.stderr
        session = await login(client, email, password)  # the owner's password still works
        assert session.body["user"]["platform_role"] == "user"

    async def test_refuses_a_short_password(self, environ: dict[str, str]) -> None:
        result = await asyncio.to_thread(
            archomata, "create-admin", "--email", unique_email(),
            env={**environ, "ARCHOMATA_ADMIN_PASSWORD": "short"})
        assert result.returncode == 2
        assert "12 to 128" in result.stderr
