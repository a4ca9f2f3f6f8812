"""Real servers for the whole run: a throwaway PostgreSQL, Redis and SMTP sink.

They start once per session in a temporary folder (as `nobody` when the tests run as
root, since PostgreSQL refuses root) and stop at the end. Each test makes its own org,
so tests never depend on one another.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import uuid4

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from archomata.app import create_app
from archomata.audit import keyed
from archomata.config import Config, load_config
from archomata.db import create_pool
from archomata.ops.devservers import (
    DatabaseUrls,
    PostgresServer,
    RedisServer,
    create_database,
    free_port,
    new_password,
)
from archomata.ops.migrations import migrate
from tests import secret_scan
from tests.servers.pgbouncer import PgBouncerServer, pgbouncer_binary

# `pgbouncer`: the service talks to PostgreSQL through PgBouncer (see runtime_url).
POOLER = os.environ.get("ARCHOMATA_TEST_POOLER", "")
RUNTIME_PASSWORD = new_password()
OWNER_PASSWORD = new_password()
DATABASES: list[DatabaseUrls] = []  # every test database, for the secret scan at the end
# The audit chain's key of the whole run: the test process writes entries with it (the
# services started from `environ` do too), so that `audit verify` checks every database.
AUDIT_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
keyed.install(base64.b64decode(AUDIT_KEY))
secret_scan.remember(RUNTIME_PASSWORD, OWNER_PASSWORD, AUDIT_KEY)

# A `slow` test (a checkout's servers built, a fuzzing budget, 100k rows) gets this long
# instead of setup.cfg's `timeout`, unless it names its own.
SLOW_TIMEOUT_SECONDS = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_SECONDS))


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="archomata-test-"))
    path.chmod(0o755)  # so that `nobody` can reach the server folders inside
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(workdir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(workdir / "postgres", free_port(), new_password(), durable=False)
    secret_scan.remember(server.superuser_password)
    server.start()
    yield server
    try:
        for urls in DATABASES:
            found = secret_scan.leaked(asyncio.run(secret_scan.audit_log_words(urls.owner)))
            assert not found, secret_scan.describe(f"audit_log of {urls.owner.rsplit('/', 1)[1]}",
                                                   found)
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def log_secret_scan() -> Iterator[None]:
    """Every log line of the run, as the service formats it, holds no secret."""
    handler = secret_scan.LogWords()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))  # the access log and audit-adjacent lines
    yield
    root.removeHandler(handler)
    root.setLevel(level)
    found = secret_scan.leaked(handler.seen)
    assert not found, secret_scan.describe("log lines", found)




@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis", free_port(), durable=False)
    server.start()
    yield server
    server.stop()


def _own_redis(workdir: Path, *, durable: bool) -> Iterator[RedisServer]:
    server = RedisServer(workdir / f"redis-{uuid4().hex[:8]}", free_port(), durable=durable)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def durable_redis(workdir: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, its append-only file on: stopped and started, it comes
    back with its data."""
    yield from _own_redis(workdir, durable=True)


@pytest.fixture
def forgetful_redis(workdir: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own (to stop, flush or restrict without touching the run's),
    no persistence but what SAVE writes: stopped and started, it is empty; killed after a
    SAVE, it comes back with that snapshot."""
    yield from _own_redis(workdir, durable=False)


async def make_database(postgres: PostgresServer, name: str, *,
                        migrated: bool = True) -> DatabaseUrls:
    urls = await create_database(postgres, name, OWNER_PASSWORD, RUNTIME_PASSWORD)
    if urls not in DATABASES:
        DATABASES.append(urls)
    if migrated:
        await migrate(urls.owner, urls.runtime)
    return urls


@pytest.fixture(scope="session")
def database(postgres: PostgresServer) -> DatabaseUrls:
    return asyncio.run(make_database(postgres, "archomata_test"))


@dataclass
class MailSink:
    """A real SMTP server on loopback that keeps what it receives."""

    port: int
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # The default policy decodes headers: an SMTPUTF8 address (`straße@`) reads as text.
        self.messages.append(message_from_bytes(envelope.content, policy=email_policy.default))
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if address.lower() in (m["To"] or "").lower()]


@pytest.fixture(scope="session")
def mail_sink() -> Iterator[MailSink]:
    from aiosmtpd.controller import Controller

    sink = MailSink(free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    yield sink
    controller.stop()


def environ_for(database: DatabaseUrls, redis_url: str, smtp_port: int) -> dict[str, str]:
    return {
        "ARCHOMATA_ENV": "production",
        "ARCHOMATA_DATABASE_URL": database.runtime,
        "ARCHOMATA_DATABASE_OWNER_URL": database.owner,
        "ARCHOMATA_REDIS_URL": redis_url,
        "ARCHOMATA_JWT_SECRETS": f"k1:{secrets.token_urlsafe(40)},k0:{secrets.token_urlsafe(40)}",
        "ARCHOMATA_DATA_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ARCHOMATA_AUDIT_KEY": AUDIT_KEY,
        "ARCHOMATA_FRONTEND_URL": "http://localhost:5173",
        "ARCHOMATA_FRONTEND_ORIGINS": "http://localhost:5173",
        "ARCHOMATA_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "ARCHOMATA_BCRYPT_ROUNDS": "4",
        # Every test signs in from 127.0.0.1 against one Redis: a tight budget would make
        # the suite fail by its own pace. Limits are tested with configs of their own.
        "ARCHOMATA_RATE_LIMIT_LOGIN": "100000/60",
        "ARCHOMATA_RATE_LIMIT_API": "100000/60",
        "ARCHOMATA_RATE_LIMIT_BRIDGE": "100000/60",
        "ARCHOMATA_RATE_LIMIT_REFRESH": "100000/60",
    }


@pytest.fixture(scope="session")
def runtime_url(database: DatabaseUrls, postgres: PostgresServer,
                workdir: Path) -> Iterator[str]:
    """The runtime role's DSN as the service is given it: PostgreSQL's own, or through a
    PgBouncer in transaction mode when ARCHOMATA_TEST_POOLER=pgbouncer (`make test` runs
    the doors', the bridge's and the audit chain's tests so a second time)."""
    if POOLER != "pgbouncer":
        yield database.runtime
        return
    if pgbouncer_binary() is None:
        message = "no pgbouncer binary: .ci/install-pgbouncer installs Debian's as root"
        if os.environ.get("ARCHOMATA_REQUIRE_PGBOUNCER"):
            pytest.fail(message)
        pytest.skip(message)
    role = urlsplit(database.runtime).username or ""
    bouncer = PgBouncerServer(workdir / "pgbouncer", free_port(), postgres.port,
                              {unquote(role): RUNTIME_PASSWORD})
    bouncer.start()
    yield bouncer.through(database.runtime)
    bouncer.stop()


@pytest.fixture(scope="session")
def environ(database: DatabaseUrls, redis_server: RedisServer, mail_sink: MailSink,
            runtime_url: str) -> dict[str, str]:
    environ = environ_for(database, redis_server.url, mail_sink.port)
    if runtime_url != database.runtime:
        environ.update(ARCHOMATA_DATABASE_URL=runtime_url, ARCHOMATA_DATABASE_POOLER=POOLER)
    secret_scan.remember(environ["ARCHOMATA_DATA_KEY"], *(
        kid_secret.split(":", 1)[1] for kid_secret in environ["ARCHOMATA_JWT_SECRETS"].split(",")))
    return environ


@pytest.fixture(scope="session")
def config(environ: dict[str, str]) -> Config:
    return load_config(environ)


@pytest.fixture
async def client(aiohttp_client: Any, config: Config) -> TestClient:
    return await aiohttp_client(create_app(config))


@pytest.fixture
async def owner_conn(database: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.owner)
    yield conn
    await conn.close()


def app_with_routes(config: Config, routes: web.RouteTableDef) -> web.Application:
    app = create_app(config)
    app.router.add_routes(routes)
    return app


@pytest.fixture
def app_config(config: Config) -> Config:
    """The config of `test_client`'s app: a module overrides this fixture for one of its own
    (short timeouts, tight rate limits)."""
    return config


@pytest.fixture
async def test_client(request: pytest.FixtureRequest, aiohttp_client: Any,
                      app_config: Config) -> TestClient:
    """The app on `app_config` with the test module's `routes` (a RouteTableDef of probe
    handlers) added: how the middlewares are tested against handlers of the test's own."""
    routes = getattr(request.module, "routes", None)
    assert isinstance(routes, web.RouteTableDef), (
        f"{request.module.__name__} has no `routes` RouteTableDef for test_client")
    return await aiohttp_client(app_with_routes(app_config, routes))


@pytest.fixture
async def pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one connection as the runtime role: a test that needs a second one while
    a transaction holds it hangs, which shows a door that gave its connection back late."""
    pool = await create_pool(config.database_url.reveal(), config, min_size=1, max_size=1)
    yield pool
    await pool.close()


@pytest.fixture
async def nowhere() -> AsyncIterator[Redis]:
    """A Redis client whose server is not there."""
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    yield client
    await client.aclose()
