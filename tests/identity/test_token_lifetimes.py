"""ARCHOMATA_ACCESS_TOKEN_SECONDS and ARCHOMATA_REFRESH_TOKEN_SECONDS through the real
API: the access token's `exp`, the login answer's `expires_in`, the refresh cookie's
Max-Age and the session's lifetime in Redis and PostgreSQL all follow them."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie
from typing import Any

import jwt
import pytest
from redis.asyncio import Redis

from archomata.app import create_app
from archomata.config import Config, load_config
from archomata.identity.web import REFRESH_COOKIE
from tests.factories import FRONTEND, register

ACCESS, REFRESH = 60, 3600


@pytest.fixture
def short_config(environ: dict[str, str]) -> Config:
    return load_config({**environ, "ARCHOMATA_ACCESS_TOKEN_SECONDS": str(ACCESS),
                        "ARCHOMATA_REFRESH_TOKEN_SECONDS": str(REFRESH)})


def _cookie_max_age(response: Any) -> int:
    for header in response.headers.getall("Set-Cookie", []):
        cookie = SimpleCookie(header)
        if REFRESH_COOKIE in cookie:
            return int(cookie[REFRESH_COOKIE]["max-age"])
    raise AssertionError("no refresh cookie")


async def test_lifetimes_follow_the_settings(aiohttp_client: Any, short_config: Config,
                                             mail_sink: Any, owner_conn: Any) -> None:
    client = await aiohttp_client(create_app(short_config))
    email, password, _ = await register(client, mail_sink)
    started = time.time()
    response = await client.post("/api/v1/auth/login",
                                 json={"email": email, "password": password})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["expires_in"] == ACCESS
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == ACCESS
    assert _cookie_max_age(response) == REFRESH

    row = await owner_conn.fetchrow(
        "select s.id, s.created_at, s.expires_at from sessions s join users u "
        "on u.id = s.user_id where u.email = $1 and s.created_at >= $2", email, started - 1)
    assert round(row["expires_at"] - row["created_at"]) == REFRESH
    redis = Redis.from_url(short_config.redis_url.reveal())
    try:
        assert REFRESH - 60 <= await redis.ttl(f"sess:{row['id']}") <= REFRESH
    finally:
        await redis.aclose()

    # A refresh keeps to them too: a new access token of the short lifetime.
    cookie = response.cookies[REFRESH_COOKIE].value
    refreshed = await client.post("/api/v1/auth/refresh", headers={
        "Cookie": f"{REFRESH_COOKIE}={cookie}", "Origin": FRONTEND})
    assert refreshed.status == 200, await refreshed.text()
    assert (await refreshed.json())["expires_in"] == ACCESS
    assert _cookie_max_age(refreshed) <= REFRESH
