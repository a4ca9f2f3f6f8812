"""Header bytes that are not UTF-8 (aiohttp hands them over as lone surrogates, which
`str.encode`, PostgreSQL, Redis and the JSON logs all refuse) are client text like any
other: a credential made of them is simply invalid, a User-Agent made of them is stored
with U+FFFD in their place; never a 500. Sent on a raw socket, as a client can."""

from __future__ import annotations

import asyncio
from typing import Any

from archomata.identity.sso_state import PendingLogin
from tests.factories import FRONTEND, signed_up

UNDECODABLE = b"\xff\xfe"


async def raw(client: Any, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n" + body)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    return int(answer.split(b" ", 2)[1]), answer


async def test_credentials_of_undecodable_bytes_are_invalid(client: Any) -> None:
    refused = [
        b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + UNDECODABLE
        + b"\r\n",
        b"GET /api/v1/bridge/commands HTTP/1.1\r\nHost: x\r\nX-API-Key: amk_" + UNDECODABLE
        + b"\r\n",
        b"POST /api/v1/auth/refresh HTTP/1.1\r\nHost: x\r\nOrigin: " + FRONTEND.encode()
        + b"\r\nCookie: archomata_refresh=" + UNDECODABLE + b"\r\nContent-Length: 0\r\n",
    ]
    for head in refused:
        status, answer = await raw(client, head)
        assert status == 401, answer


async def test_an_undecodable_user_agent_is_stored_readable(
        client: Any, mail_sink: Any, owner_conn: Any) -> None:
    me = await signed_up(client, mail_sink)
    body = b'{"email": "%s", "password": "%s"}' % (me.email.encode(), me.password.encode())
    status, answer = await raw(
        client, b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nUser-Agent: agent/"
        + UNDECODABLE + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n", body)
    assert status == 200, answer
    stored = await owner_conn.fetchval(
        "select user_agent from audit_log where actor_id = $1 "
        "and action = 'auth.login.succeeded' order by occurred_at desc limit 1", me.user_id)
    assert stored == "agent/\ufffd\ufffd"


def test_an_undecodable_sso_binding_cookie_binds_nothing() -> None:
    pending = PendingLogin("google", "nonce", "verifier", "/", "0" * 64)
    assert pending.bound_to(UNDECODABLE.decode("utf-8", "surrogateescape")) is False
