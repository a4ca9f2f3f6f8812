"""`archomata dev`: everything a developer needs, in a folder of the checkout.

Starts PostgreSQL and Redis (unless ARCHOMATA_DATABASE_URL / ARCHOMATA_REDIS_URL name
servers to use) and a mail sink that prints mails, generates and keeps development
secrets, migrates, creates a demo platform administrator and a demo org, prints how to
log in, and serves. Ctrl-C stops all of it; the next run reuses the data.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from archomata.config import load_config
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
    # Absent from a state file written before the audit chain was keyed: made then.
    audit_key: str = ""

    @classmethod
    def load_or_create(cls, path: Path) -> DevState:
        if path.exists():
            state = cls(**json.loads(path.read_text()))
            if not state.audit_key:
                state.audit_key = _new_key()
                path.write_text(json.dumps(asdict(state), indent=2))
            return state
        state = cls(free_port(), free_port(), free_port(), new_password(), new_password(),
                    new_password(), secrets.token_urlsafe(48),
                    base64.b64encode(secrets.token_bytes(32)).decode(), new_password(),
                    new_password(), _new_key())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(state), indent=2))
        return state


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class _PrintingMailHandler:
    """aiosmtpd handler that shows each mail on the console, links and all."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message: Message = message_from_bytes(envelope.content)
        payload = message.get_payload(decode=True) if not message.is_multipart() else b""
        body = payload if isinstance(payload, bytes) else b""
        print(f"\n--- mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']}\n"
              f"{body.decode('utf-8', 'replace')}\n---", flush=True)
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
  Mails (verification, reset, invitations) are printed here.
"""


def _check_port() -> None:
    """A taken port is said before anything starts (PostgreSQL, Redis, the mail sink), so
    nothing is left running and no banner promises an address that serves nothing."""
    port = os.environ.get("ARCHOMATA_PORT", "").strip() or "8080"
    if port.isascii() and port.isdecimal() and int(port) <= 65535:  # else: the config says
        ensure_free(os.environ.get("ARCHOMATA_HOST", "").strip() or "127.0.0.1", int(port))


def run_dev(data_dir: str) -> None:
    _check_port()
    base = Path(data_dir).resolve()
    state = DevState.load_or_create(base / "dev-state.json")
    stoppers: list[Any] = []
    try:
        if not os.environ.get("ARCHOMATA_DATABASE_URL"):
            postgres = PostgresServer(base / "postgres", state.postgres_port,
                                      state.postgres_password)
            postgres.start()
            stoppers.append(postgres.stop)
            urls = asyncio.run(create_database(postgres, "archomata", state.owner_password,
                                               state.runtime_password))
            os.environ["ARCHOMATA_DATABASE_URL"] = urls.runtime
            os.environ["ARCHOMATA_DATABASE_OWNER_URL"] = urls.owner
        if not os.environ.get("ARCHOMATA_REDIS_URL"):
            redis = RedisServer(base / "redis", state.redis_port)
            redis.start()
            stoppers.append(redis.stop)
            os.environ["ARCHOMATA_REDIS_URL"] = redis.url
        if not os.environ.get("ARCHOMATA_SMTP_URL"):
            sink = _start_mail_sink(state.smtp_port)
            stoppers.append(sink.stop)
            os.environ["ARCHOMATA_SMTP_URL"] = f"smtp://127.0.0.1:{state.smtp_port}"
        os.environ.setdefault("ARCHOMATA_ENV", "development")
        # localhost, not the 127.0.0.1 it listens on: the SPA on the default FRONTEND_URL
        # (http://localhost:5173) is then on the service's site, so that the browser sends
        # it the SameSite=Strict refresh cookie.
        port = os.environ.get("ARCHOMATA_PORT", "").strip() or "8080"
        os.environ.setdefault("ARCHOMATA_PUBLIC_URL", f"http://localhost:{port}")
        os.environ.setdefault("ARCHOMATA_JWT_SECRETS", f"dev:{state.jwt_secret}")
        os.environ.setdefault("ARCHOMATA_DATA_KEY", state.data_key)
        os.environ.setdefault("ARCHOMATA_AUDIT_KEY", state.audit_key)
        migrate()
        asyncio.run(_demo_accounts(state))
        print(_banner(state), flush=True)
        serve(load_config())
    finally:
        for stop in reversed(stoppers):
            stop()
