"""`archomata backup`, `backup verify` and `restore` as real subprocesses, with the real
pg_dump and pg_restore of the harness's PostgreSQL: a round trip restores every row, the
audit chains and a working login; a damaged, truncated or foreign file restores nothing."""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from archomata.audit import AuditContext
from archomata.config import Config
from archomata.db import create_pool
from archomata.identity.login_throttle import LoginThrottle
from archomata.identity.onboarding import create_user_with_org
from archomata.identity.passwords import PasswordHasher
from archomata.identity.reception import Reception
from archomata.identity.sessions import SessionStore
from archomata.identity.signin import password_sign_in
from archomata.ops.devservers import DatabaseUrls, PostgresServer
from tests.conftest import make_database
from tests.factories import strong_password, unique_email

TABLES = """select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind in ('r', 'p') order by 1"""


def archomata(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archomata", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def env_for(environ: dict[str, str], urls: DatabaseUrls, backup_key: str) -> dict[str, str]:
    return {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
            "ARCHOMATA_DATABASE_OWNER_URL": urls.owner, "ARCHOMATA_BACKUP_KEY": backup_key}


async def row_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        names = [r["relname"] for r in await conn.fetch(TABLES)]
        return {name: await conn.fetchval(f'select count(*) from "{name}"') for name in names}
    finally:
        await conn.close()


async def relation_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public'")
        return count
    finally:
        await conn.close()


class Source:
    def __init__(self, urls: DatabaseUrls, email: str, password: str) -> None:
        self.urls, self.email, self.password = urls, email, password


@pytest.fixture(scope="module")
def source(postgres: PostgresServer, config: Config) -> Source:
    """A database of its own with an account, its org and their audit entries."""
    async def made() -> Source:
        urls = await make_database(postgres, "backup_source")
        pool = await create_pool(urls.runtime, config)
        hasher = PasswordHasher(4, 1)
        email, password = unique_email("backup"), strong_password()
        try:
            for n in range(3):
                await create_user_with_org(
                    pool, AuditContext.system(), email=email if n == 0 else unique_email("b"),
                    name=f"Backup {n}", password_hash=await hasher.hash(password),
                    org_name=f"Backup Org {n}", verified=True)
        finally:
            hasher.close()
            await pool.close()
        return Source(urls, email, password)

    return asyncio.run(made())


async def empty_database(postgres: PostgresServer, name: str) -> DatabaseUrls:
    return await make_database(postgres, f"{name}_{secrets.token_hex(4)}", migrated=False)


@pytest.fixture
async def backup_file(tmp_path: Path, source: Source,
                      environ: dict[str, str]) -> tuple[Path, str]:
    backup_key = key()
    path = tmp_path / "archomata.backup"
    made = await asyncio.to_thread(archomata, "backup", "--output", str(path),
                                   env=env_for(environ, source.urls, backup_key))
    assert made.returncode == 0, made.stderr
    return path, backup_key


async def test_a_round_trip_restores_every_row_the_chains_and_a_login(
        postgres: PostgresServer, environ: dict[str, str], config: Config, source: Source,
        backup_file: tuple[Path, str]) -> None:
    path, backup_key = backup_file
    assert b"PGDMP" not in path.read_bytes()  # pg_dump's magic: the dump is sealed
    assert source.email.encode() not in path.read_bytes()
    checked = await asyncio.to_thread(archomata, "backup", "verify", "--input", str(path),
                                      env=env_for(environ, source.urls, backup_key))
    assert checked.returncode == 0, checked.stderr
    target = await empty_database(postgres, "backup_target")
    env = env_for(environ, target, backup_key)
    restored = await asyncio.to_thread(archomata, "restore", "--input", str(path), env=env)
    assert restored.returncode == 0, restored.stderr
    counts = await row_counts(target.owner)
    assert counts == await row_counts(source.urls.owner)
    assert counts["users"] >= 3 and counts["audit_log"] >= 3
    chains = await asyncio.to_thread(archomata, "audit", "verify", env=env)
    assert chains.returncode == 0, chains.stdout + chains.stderr
    assert await _signs_in(config, target, source)


async def _signs_in(config: Config, target: DatabaseUrls, source: Source) -> bool:
    pool = await create_pool(target.runtime, config)  # as the service would: the runtime role
    redis = Redis.from_url(config.redis_url.reveal())
    hasher = PasswordHasher(4, 1)
    reception = Reception(pool, SessionStore(redis, config), hasher,
                LoginThrottle(redis, free_failures=5, max_seconds=60))
    try:
        opened = await password_sign_in(reception, AuditContext.system(), source.email,
                                        source.password, None)
        return opened.user.email == source.email and opened.membership is not None
    finally:
        hasher.close()
        await redis.aclose()
        await pool.close()


def flipped(blob: bytes) -> bytes:
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0x40
    return bytes(damaged)


@pytest.mark.parametrize(("damage", "message"), [
    (flipped, "does not authenticate"),
    (lambda blob: blob[:len(blob) - 30], "truncated"),
    (lambda blob: blob + b"more", "after its final chunk"),
])
async def test_a_damaged_file_restores_nothing(
        tmp_path: Path, postgres: PostgresServer, environ: dict[str, str],
        backup_file: tuple[Path, str], damage: Any, message: str) -> None:
    path, backup_key = backup_file
    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(damage(path.read_bytes()))
    target = await empty_database(postgres, "backup_damaged")
    env = env_for(environ, target, backup_key)
    for command in (("backup", "verify"), ("restore",)):
        refused = await asyncio.to_thread(archomata, *command, "--input", str(damaged),
                                          env=env)
        assert refused.returncode == 1
        assert message in refused.stderr and "Traceback" not in refused.stderr
    assert await relation_count(target.owner) == 0


async def test_the_wrong_key_and_a_non_empty_database_are_refused(
        postgres: PostgresServer, environ: dict[str, str], source: Source,
        backup_file: tuple[Path, str]) -> None:
    path, backup_key = backup_file
    target = await empty_database(postgres, "backup_wrong_key")
    wrong = await asyncio.to_thread(archomata, "restore", "--input", str(path),
                                    env=env_for(environ, target, key()))
    assert wrong.returncode == 1 and "made with another key" in wrong.stderr
    assert await relation_count(target.owner) == 0
    occupied = await asyncio.to_thread(archomata, "restore", "--input", str(path),
                                       env=env_for(environ, source.urls, backup_key))
    assert occupied.returncode == 1 and "is not empty" in occupied.stderr


async def test_a_failed_dump_leaves_no_file(tmp_path: Path, environ: dict[str, str],
                                            source: Source) -> None:
    path = tmp_path / "never.backup"
    env = env_for(environ, source.urls, key())
    env["ARCHOMATA_DATABASE_OWNER_URL"] = source.urls.owner.rsplit("/", 1)[0] + "/no_such_db"
    failed = await asyncio.to_thread(archomata, "backup", "--output", str(path), env=env)
    assert failed.returncode == 1 and "pg_dump failed" in failed.stderr
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))  # nor a .partial


async def test_the_backup_key_must_not_be_the_data_key(
        tmp_path: Path, environ: dict[str, str], source: Source) -> None:
    env = env_for(environ, source.urls, environ["ARCHOMATA_DATA_KEY"])
    refused = await asyncio.to_thread(archomata, "backup", "--output",
                                      str(tmp_path / "x"), env=env)
    assert refused.returncode == 2 and "must not be the data key" in refused.stderr


WRAPPER = """#!/bin/sh
# Records what it was started with, then runs the real program (the harness's).
out="{record}/$(basename "$0").$$"
tr '\\0' ' ' < /proc/$$/cmdline > "$out"
{{ echo; env; echo ==; cat "$PGSERVICEFILE" 2>/dev/null; }} >> "$out"
exec "{real}/$(basename "$0")" "$@"
"""


def wrapped_tools(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of pg_dump and pg_restore that write down their command line, their
    environment and any service file, then exec the real ones: ARCHOMATA_POSTGRES_BIN_DIR."""
    from archomata.ops.cli_backup import pg_tool

    real = Path(pg_tool("pg_dump", {})).parent
    tools, record = tmp_path / "bin", tmp_path / "record"
    tools.mkdir()
    record.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (tools / name).write_text(WRAPPER.format(record=record, real=real))
        (tools / name).chmod(0o755)
    return tools, record


def in_query(dsn: str, **more: str) -> str:
    """`dsn` with its password moved from the netloc to the query string (`?password=`)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(dsn)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in
                     {"password": parts.password or "", **more}.items())
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def test_no_secret_of_the_owner_dsn_reaches_the_command_line(
        tmp_path: Path, postgres: PostgresServer, environ: dict[str, str],
        source: Source) -> None:
    """A password in the query string (and an sslpassword, which libpq reads from no
    variable) travels in pg_dump's and pg_restore's environment or a private service
    file, never their argv; the round trip still restores every row."""
    from urllib.parse import unquote, urlsplit

    tools, record = wrapped_tools(tmp_path)
    password = unquote(urlsplit(source.urls.owner).password or "")
    ssl_password = "ssl-" + secrets.token_hex(8)
    backup_key, path = key(), tmp_path / "query.backup"
    env = {**env_for(environ, source.urls, backup_key),
           "ARCHOMATA_POSTGRES_BIN_DIR": str(tools),
           "ARCHOMATA_DATABASE_OWNER_URL": in_query(
               source.urls.owner, sslpassword=ssl_password, sslmode="disable")}
    made = await asyncio.to_thread(archomata, "backup", "--output", str(path), env=env)
    assert made.returncode == 0, made.stderr
    target = await empty_database(postgres, "backup_query")
    env = {**env_for(environ, target, backup_key), "ARCHOMATA_POSTGRES_BIN_DIR": str(tools),
           "ARCHOMATA_DATABASE_OWNER_URL": in_query(target.owner)}
    restored = await asyncio.to_thread(archomata, "restore", "--input", str(path), env=env)
    assert restored.returncode == 0, restored.stderr
    assert await row_counts(target.owner) == await row_counts(source.urls.owner)

    _check_recorded(record, password, ssl_password)


def _check_recorded(record: Path, password: str, ssl_password: str) -> None:
    [dumped] = record.glob("pg_dump.*")
    [restoring] = record.glob("pg_restore.*")
    for seen in (dumped, restoring):
        argv, _, rest = seen.read_text().partition("\n")
        environment = rest.partition("==\n")[0]
        assert "--dbname=postgresql://" in argv
        assert password not in argv and ssl_password not in argv and "password" not in argv
        assert f"PGPASSWORD={password}\n" in environment
        assert "ARCHOMATA_" not in environment  # nor the service's keys and DSNs
    assert f"sslpassword={ssl_password}\n" in dumped.read_text().partition("==\n")[2]
    service_files = [line.partition("=")[2] for line in dumped.read_text().splitlines()
                     if line.startswith("PGSERVICEFILE=")]
    assert service_files and not Path(service_files[0]).exists()  # removed after
