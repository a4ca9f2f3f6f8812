"""`archomata dev`: everything a developer needs, in a folder of the checkout.

Starts PostgreSQL and Redis (unless ARCHOMATA_DATABASE_URL / ARCHOMATA_REDIS_URL name
servers to use) and a mail sink that prints mails, generates and keeps development
secrets, migrates, creates a demo platform administrator and a demo org, prints how to
log in, and serves. Ctrl-C stops all of it; the next run reuses the data.

`archomata dev env` prints that stack's settings as shell exports, so that the other
commands (`audit verify`, `backup`...) reach it: `eval "$(archomata dev env)"`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import shlex
from dataclasses import asdict, dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from archomata import logs
from archomata.config import ConfigError, load_config
from archomata.http.server import ensure_free
from archomata.ops.cli_migrate import migrate
from archomata.ops.cli_serve import serve
from archomata.ops.devservers import (
    PostgresServer,
    RedisServer,
    create_database,
    free_port,
    new_password,
)

DEMO_PLATFORM_ADMIN = "admin@archomata.local"
DEMO_ORG_ADMIN = "owner@demo.archomata.local"
DEMO_ORG_NAME = "Demo Trading"
# A developer mistyping a password a few times, or a script logging in again and again,
# is not an attack: `make run` allows ten times what production does by default.
DEV_LOGIN_LIMITS = {"ARCHOMATA_RATE_LIMIT_LOGIN": "100/60",  # production: 10/60
                    "ARCHOMATA_LOGIN_BACKOFF_AFTER": "50"}  # production: 5


@dataclass
class DevState:
    """Generated once, kept in `<data dir>/dev-state.json` (mode 0600, never committed)."""

    postgres_port: int
    redis_port: int
    smtp_port: int
    postgres_password: str
    owner_password: str
    runtime_password: str
    jwt_secret: str
    data_key: str
    platform_admin_password: str
    org_admin_password: str
    # Absent from a state file written before the audit chain was keyed (or before
    # backups were keyed here): made then.
    audit_key: str = ""
    backup_key: str = ""

    @classmethod
    def load_or_create(cls, path: Path) -> DevState:
        if path.exists():
            state = cls(**json.loads(path.read_text()))
            if not state.audit_key or not state.backup_key:
                state.audit_key = state.audit_key or _new_key()
                state.backup_key = state.backup_key or _new_key()
                path.write_text(json.dumps(asdict(state), indent=2))
            return state
        state = cls(free_port(), free_port(), free_port(), new_password(), new_password(),
                    new_password(), secrets.token_urlsafe(48),
                    base64.b64encode(secrets.token_bytes(32)).decode(), new_password(),
                    new_password(), _new_key(), _new_key())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(state), indent=2))
        return state


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _port() -> str:
    return os.environ.get("ARCHOMATA_PORT", "").strip() or "8080"


def stack_environment(state: DevState, base: Path) -> dict[str, str]:
    """The settings of the stack `archomata dev` runs from `base`: its own servers (on the
    ports kept in the state), its development secrets, its relaxed login limits."""
    postgres = PostgresServer(base / "postgres", state.postgres_port, state.postgres_password)
    return {
        "ARCHOMATA_ENV": "development",
        # The DSNs create_database answers, without starting anything.
        "ARCHOMATA_DATABASE_URL": postgres.dsn("archomata_app", state.runtime_password,
                                               "archomata"),
        "ARCHOMATA_DATABASE_OWNER_URL": postgres.dsn("archomata_owner", state.owner_password,
                                                     "archomata"),
        "ARCHOMATA_REDIS_URL": RedisServer(base / "redis", state.redis_port).url,
        "ARCHOMATA_SMTP_URL": f"smtp://127.0.0.1:{state.smtp_port}",
        # localhost, not 127.0.0.1: the SPA on the default FRONTEND_URL
        # (http://localhost:5173) is then on the service's site, so that the browser sends
        # it the SameSite=Strict refresh cookie. It listens on both 127.0.0.1 and ::1.
        "ARCHOMATA_HOST": "localhost",
        "ARCHOMATA_PUBLIC_URL": f"http://localhost:{_port()}",
        "ARCHOMATA_JWT_SECRETS": f"dev:{state.jwt_secret}",
        "ARCHOMATA_DATA_KEY": state.data_key,
        "ARCHOMATA_AUDIT_KEY": state.audit_key,
        "ARCHOMATA_BACKUP_KEY": state.backup_key,
        **DEV_LOGIN_LIMITS,
    }


def print_env(data_dir: str) -> None:
    """`archomata dev env`: the stack's settings as `export` lines for a POSIX shell."""
    path = Path(data_dir).resolve() / "dev-state.json"
    if not path.exists():
        raise ConfigError(f"no {path}: run `make run` (archomata dev) here first, then "
                          f"`eval \"$(archomata dev env)\"` in another shell")
    print("# The local `make run` stack (archomata dev): development secrets from "
          f"{path},\n# made for this checkout and never to be used elsewhere.")
    for name, value in stack_environment(DevState.load_or_create(path), path.parent).items():
        print(f"export {name}={shlex.quote(value)}")


class _PrintingMailHandler:
    """aiosmtpd handler that shows each mail on the console, links and all."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message: Message = message_from_bytes(envelope.content)
        payload = message.get_payload(decode=True) if not message.is_multipart() else b""
        body = payload if isinstance(payload, bytes) else b""
        # SMTP ends lines with CRLF; a console wants plain line ends.
        text = body.decode("utf-8", "replace").replace("\r\n", "\n")
        print(f"\n--- mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']}\n"
              f"{text}\n---", flush=True)
        return "250 Message accepted"


def _start_mail_sink(port: int) -> Any:
    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's chatter per probe
    controller = Controller(_PrintingMailHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


async def _demo_accounts(state: DevState) -> None:
    from archomata.audit import AuditContext
    from archomata.db import create_pool, service_tx
    from archomata.identity.onboarding import create_user_with_org, ensure_platform_admin
    from archomata.identity.passwords import PasswordHasher
    from archomata.identity.store import users

    config = load_config()
    pool = await create_pool(config.database_url.reveal(), min_size=1, max_size=2)
    hasher = PasswordHasher(config.bcrypt_rounds, 2)
    try:
        await ensure_platform_admin(pool, hasher, email=DEMO_PLATFORM_ADMIN,
                                    password=state.platform_admin_password)
        async with service_tx(pool) as tx:
            exists = await users.get_by_email(tx, DEMO_ORG_ADMIN) is not None
        if not exists:
            await create_user_with_org(
                pool, AuditContext.system(), email=DEMO_ORG_ADMIN, name="Demo Owner",
                password_hash=await hasher.hash(state.org_admin_password),
                org_name=DEMO_ORG_NAME, verified=True)
    finally:
        hasher.close()
        await pool.close()


def _banner(state: DevState) -> str:
    config = load_config()
    url = config.public_url
    login = f"curl -s {url}/api/v1/auth/login -H 'Content-Type: application/json' -d "
    return f"""
Archomata is serving on {url}  (Ctrl-C stops the service and its servers)
  API docs:  {url}/api/v1/docs     health: {url}/health/ready
  Platform administrator: {DEMO_PLATFORM_ADMIN} / {state.platform_admin_password}
  Demo org "{DEMO_ORG_NAME}" administrator: {DEMO_ORG_ADMIN} / {state.org_admin_password}
  Log in:  {login}'{{"email": "{DEMO_ORG_ADMIN}", "password": "{state.org_admin_password}"}}'
  Login limits are relaxed for development: 100 logins a minute per address and 50
  failures per account before a wait (production defaults: 10 and 5).
  Other commands (audit verify, backup...): eval "$(.venv/bin/archomata dev env)"
  Mails (verification, reset, invitations) are printed here.
"""


def _check_port() -> None:
    """A taken port is said before anything starts (PostgreSQL, Redis, the mail sink), so
    nothing is left running and no banner promises an address that serves nothing."""
    port = _port()
    if port.isascii() and port.isdecimal() and int(port) <= 65535:  # else: the config says
        ensure_free(os.environ.get("ARCHOMATA_HOST", "").strip() or "localhost", int(port))


def _own(name: str, stack: dict[str, str]) -> bool:
    """Whether to start the stack's own server for `name`: unless another is named (an
    `eval "$(archomata dev env)"` shell names the stack's own: started all the same)."""
    return os.environ.get(name, "") in ("", stack[name])


def run_dev(data_dir: str) -> None:
    logs.configure(human=True)
    _check_port()
    base = Path(data_dir).resolve()
    state = DevState.load_or_create(base / "dev-state.json")
    stack = stack_environment(state, base)
    stoppers: list[Any] = []
    try:
        if _own("ARCHOMATA_DATABASE_URL", stack):
            postgres = PostgresServer(base / "postgres", state.postgres_port,
                                      state.postgres_password)
            postgres.start()
            stoppers.append(postgres.stop)
            urls = asyncio.run(create_database(postgres, "archomata", state.owner_password,
                                               state.runtime_password))
            os.environ["ARCHOMATA_DATABASE_URL"] = urls.runtime
            os.environ["ARCHOMATA_DATABASE_OWNER_URL"] = urls.owner
        if _own("ARCHOMATA_REDIS_URL", stack):
            redis = RedisServer(base / "redis", state.redis_port)
            redis.start()
            stoppers.append(redis.stop)
            os.environ["ARCHOMATA_REDIS_URL"] = redis.url
        if _own("ARCHOMATA_SMTP_URL", stack):
            sink = _start_mail_sink(state.smtp_port)
            stoppers.append(sink.stop)
            os.environ["ARCHOMATA_SMTP_URL"] = f"smtp://127.0.0.1:{state.smtp_port}"
        for name, value in stack.items():  # the servers' URLs: set above when started
            os.environ.setdefault(name, value)
        migrate()
        asyncio.run(_demo_accounts(state))
        print(_banner(state), flush=True)
        serve(load_config())
    finally:
        for stop in reversed(stoppers):
            stop()
