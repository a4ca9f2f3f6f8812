"""The `archomata` command line, run as a real subprocess."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from typing import Any

import pytest

from archomata.ops.devservers import PostgresServer
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

    @pytest.mark.parametrize(("variable", "value"), [
        ("ARCHOMATA_JWT_SECRETS", ""), ("ARCHOMATA_JWT_SECRETS", "k:short"),
        ("ARCHOMATA_DATA_KEY", ""), ("ARCHOMATA_DATA_KEY", "dG9vIHNob3J0")])
    async def test_production_without_strong_secrets_stops_naming_the_variable(
            self, environ: dict[str, str], variable: str, value: str) -> None:
        result = await asyncio.to_thread(archomata, "serve", env={**environ, variable: value})
        assert result.returncode == 2
        assert variable in result.stderr
        assert "Traceback" not in result.stderr


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
