"""Builders for test data, through the real API; every call makes something new."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from uuid import UUID

from tests.secret_scan import remember

FRONTEND = "http://localhost:5173"
TOKEN_IN_LINK = re.compile(r"\?token=([A-Za-z0-9_.\-%]+)")


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(6)}@example.test"


def strong_password() -> str:
    password = "pw-" + secrets.token_urlsafe(18)
    remember(password)
    return password


def token_from_mail(mail_sink: Any, email: str, subject_word: str) -> str:
    mails = [m for m in mail_sink.to(email) if subject_word.lower() in m["Subject"].lower()]
    assert mails, f"no {subject_word!r} mail to {email}"
    body = mails[-1].get_payload(decode=True).decode()
    match = TOKEN_IN_LINK.search(body)
    assert match, body
    remember(match.group(1))
    return match.group(1)


async def wait_for_mail(mail_sink: Any, email: str, subject_word: str) -> str:
    import asyncio
    for _ in range(100):
        if any(subject_word.lower() in m["Subject"].lower() for m in mail_sink.to(email)):
            return token_from_mail(mail_sink, email, subject_word)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {subject_word!r} mail to {email}")


@dataclass
class Session:
    """A signed-in person as a browser holds them: access token and refresh cookie."""

    email: str
    password: str
    user_id: UUID
    org_id: UUID | None
    access: str
    refresh: str | None
    body: dict[str, Any]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}

    @property
    def cookie(self) -> dict[str, str]:
        assert self.refresh is not None
        return {"Cookie": f"archomata_refresh={self.refresh}", "Origin": FRONTEND}


def refresh_cookie_of(response: Any) -> str | None:
    for header in response.headers.getall("Set-Cookie", []):
        cookie = SimpleCookie(header)
        if "archomata_refresh" in cookie:
            return cookie["archomata_refresh"].value or None
    return None


async def register(client: Any, mail_sink: Any, *, verify: bool = True,
                   email: str | None = None, password: str | None = None,
                   org_name: str = "Acme Trading") -> tuple[str, str, dict[str, Any]]:
    email = email or unique_email()
    password = password or strong_password()
    remember(password)
    response = await client.post("/api/v1/auth/register", json={
        "email": email, "password": password, "name": "Test Person", "org_name": org_name})
    assert response.status == 201, await response.text()
    user = (await response.json())["user"]
    # The account is written after the answer, and its mail sent after that: once the
    # mail is in, the account exists.
    token = await wait_for_mail(mail_sink, email, "verify")
    if verify:
        verified = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert verified.status == 200, await verified.text()
    return email, password, user


async def login(client: Any, email: str, password: str, org_id: UUID | None = None,
                **headers: str) -> Session:
    body: dict[str, Any] = {"email": email, "password": password}
    if org_id is not None:
        body["org_id"] = str(org_id)
    response = await client.post("/api/v1/auth/login", json=body, headers=headers)
    assert response.status == 200, await response.text()
    data = await response.json()
    remember(data["access_token"], refresh_cookie_of(response))
    org = data["org"]
    return Session(email, password, UUID(data["user"]["id"]),
                   UUID(org["id"]) if org else None, data["access_token"],
                   refresh_cookie_of(response), data)


async def signed_up(client: Any, mail_sink: Any, org_name: str = "Acme Trading") -> Session:
    """A new verified person with their own org, signed in."""
    email, password, _ = await register(client, mail_sink, org_name=org_name)
    return await login(client, email, password)


async def platform_admin(client: Any, config: Any) -> Session:
    """A platform administrator made as `create-admin` makes one, signed in."""
    from archomata.db import create_pool
    from archomata.identity.onboarding import ensure_platform_admin
    from archomata.identity.passwords import PasswordHasher

    email, password = unique_email("admin"), strong_password()
    pool = await create_pool(config.database_url.reveal(), config, min_size=1, max_size=1)
    hasher = PasswordHasher(config.bcrypt_rounds, 1)
    try:
        await ensure_platform_admin(pool, hasher, email=email, password=password)
    finally:
        hasher.close()
        await pool.close()
    return await login(client, email, password)


async def member_with_roles(client: Any, mail_sink: Any, owner_conn: Any, org_id: UUID,
                            role_names: list[str], org_role: str = "member") -> Session:
    """A new person who is a member of `org_id` holding the named system roles directly,
    signed in to that org. (Written as the owner would: the membership API is tested on
    its own.)"""
    email, password, user = await register(client, mail_sink, org_name="Own Org")
    user_id = UUID(user["id"])
    await owner_conn.execute("insert into memberships (org_id, user_id, org_role) "
                             "values ($1, $2, $3)", org_id, user_id, org_role)
    await owner_conn.execute(
        "insert into member_roles (org_id, user_id, role_id) "
        "select $1, $2, id from roles where name = any($3::text[])", org_id, user_id, role_names)
    return await login(client, email, password, org_id=org_id)


async def agent_with_key(client: Any, session: Session,
                         name: str = "Terminal") -> tuple[dict[str, Any], str]:
    """A new agent of the session's org and its API key."""
    response = await client.post("/api/v1/agents", json={"name": name}, headers=session.auth)
    assert response.status == 201, await response.text()
    body = await response.json()
    return body["agent"], body["api_key"]


def agent_auth(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


async def trading_account(client: Any, session: Session, *, agent_id: str | None = None,
                          login: int | None = None, password: str | None = None,
                          **fields: Any) -> dict[str, Any]:
    """A new MT5 account of the session's org, assigned to `agent_id` when given."""
    body: dict[str, Any] = {"name": "Main", "broker": "Broker Ltd", "server": "Broker-Demo",
                            "login": login or secrets.randbelow(10**9) + 1,
                            "environment": "demo", **fields}
    if agent_id is not None:
        body["agent_id"] = agent_id
    if password is not None:
        body["credentials"] = {"password": password}
    response = await client.post("/api/v1/accounts", json=body, headers=session.auth)
    assert response.status == 201, await response.text()
    return await response.json()


async def tenant_account(pool: Any) -> Any:
    """A verified user with an org of their own, made below HTTP (for door and store tests)."""
    from archomata.audit import AuditContext
    from archomata.identity.onboarding import create_user_with_org

    return await create_user_with_org(pool, AuditContext.system(), email=unique_email(),
                                      name="Tenant", password_hash=None, org_name="Tenant",
                                      verified=True)
