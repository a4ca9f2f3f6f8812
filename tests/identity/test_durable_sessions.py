"""Sessions outlive Redis losing its data: kept in PostgreSQL as well (hashes only), put
back before any token is accepted. Access tokens and refresh cookies of live sessions
work again, no one is signed out, and every revocation holds: logged-out and deleted
sessions, reuse-detected families, logout-all, password changes, disabled users."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import jwt
import pytest
from redis.asyncio import Redis

from archomata import keys
from archomata.app import create_app
from archomata.config import Config, Secret
from archomata.db import service_tx, system_tx
from archomata.identity import session_scripts
from archomata.identity.revocation import READY, REVOCATION, STALE
from archomata.identity.server_watch import run_id_of
from archomata.identity.store import sessions as session_rows
from archomata.ops.devservers import RedisServer, SentinelGroup, free_port
from tests.factories import (
    agent_auth,
    agent_with_key,
    login,
    refresh_cookie_of,
    signed_up,
    strong_password,
)
from tests.identity.test_auth import refresh

PROBE = "/api/v1/org/members"


@pytest.fixture
def forgetful_redis(workdir: Path) -> Iterator[RedisServer]:
    """No persistence: stopped and started again, it is empty."""
    server = RedisServer(workdir / f"redis-sess-{uuid4().hex[:8]}", free_port(),
                         durable=False)
    server.start()
    yield server
    server.stop()


async def on(aiohttp_client: Any, config: Config, redis: RedisServer | SentinelGroup) -> Any:
    """The service on that Redis (a server, or the master a Sentinel group names)."""
    return await aiohttp_client(create_app(dataclasses.replace(
        config, redis_url=Secret(redis.url))))


async def forget(client: Any) -> None:
    """Redis loses everything: what a restart without persistence or a FLUSHALL does."""
    await client.app[keys.REDIS].flushall()


async def test_live_sessions_survive_a_redis_restart_on_both_instances(
        aiohttp_client: Any, config: Config, mail_sink: Any, forgetful_redis: RedisServer,
        owner_conn: Any) -> None:
    first = await on(aiohttp_client, config, forgetful_redis)
    second = await on(aiohttp_client, config, forgetful_redis)
    person = await signed_up(first, mail_sink)
    assert (await second.get(PROBE, headers=person.auth)).status == 200
    forgetful_redis.stop()
    forgetful_redis.start()  # empty
    # The access token works again, on either instance, with no one signing in.
    assert (await second.get(PROBE, headers=person.auth)).status == 200
    assert (await first.get(PROBE, headers=person.auth)).status == 200
    # So does the refresh cookie, and it rotates as before.
    renewed = await refresh(first, person.refresh or "")
    assert renewed.status == 200, await renewed.text()
    new_cookie = refresh_cookie_of(renewed)
    assert new_cookie not in (None, person.refresh)
    sessions = await (await second.get("/api/v1/auth/sessions",
                                       headers=person.auth)).json()
    assert [s["current"] for s in sessions["items"]] == [True]
    # What PostgreSQL keeps is hashes: no token in clear.
    row = await owner_conn.fetchrow("select * from sessions where user_id = $1",
                                    person.user_id)
    assert person.refresh not in str(dict(row)) and new_cookie not in str(dict(row))


async def test_a_refresh_is_the_first_to_meet_an_empty_redis(
        aiohttp_client: Any, config: Config, mail_sink: Any,
        forgetful_redis: RedisServer) -> None:
    client = await on(aiohttp_client, config, forgetful_redis)
    person = await signed_up(client, mail_sink)
    await forget(client)
    renewed = await refresh(client, person.refresh or "")  # no access token came first
    assert renewed.status == 200, await renewed.text()


async def test_every_revocation_holds_after_redis_forgets(
        aiohttp_client: Any, config: Config, mail_sink: Any,
        forgetful_redis: RedisServer) -> None:
    client = await on(aiohttp_client, config, forgetful_redis)
    person = await signed_up(client, mail_sink)
    logged_out = await login(client, person.email, person.password)
    deleted = await login(client, person.email, person.password)
    replayed = await login(client, person.email, person.password)
    kept = await login(client, person.email, person.password)
    assert (await client.post("/api/v1/auth/logout", headers={
        **logged_out.auth, **logged_out.cookie})).status == 204
    assert (await client.delete(f"/api/v1/auth/sessions/{await _sid(client, deleted)}",
                                headers=person.auth)).status == 204
    # A family whose grandparent token is replayed is revoked as a reuse.
    one = await refresh(client, replayed.refresh or "")
    two = await refresh(client, refresh_cookie_of(one) or "")
    assert two.status == 200
    assert (await refresh(client, replayed.refresh or "")).status == 401
    await forget(client)
    for gone in (logged_out, deleted, replayed):
        assert (await client.get(PROBE, headers=gone.auth)).status == 401
    assert (await refresh(client, logged_out.refresh or "")).status == 401
    assert (await refresh(client, refresh_cookie_of(two) or "")).status == 401
    for alive in (person, kept):
        assert (await client.get(PROBE, headers=alive.auth)).status == 200


async def test_logout_all_and_a_password_change_hold_after_redis_forgets(
        aiohttp_client: Any, config: Config, mail_sink: Any,
        forgetful_redis: RedisServer) -> None:
    client = await on(aiohttp_client, config, forgetful_redis)
    person = await signed_up(client, mail_sink)
    other = await login(client, person.email, person.password)
    changed = await client.post("/api/v1/auth/password/change", headers=person.auth, json={
        "current_password": person.password, "new_password": strong_password()})
    assert changed.status == 204
    everywhere = await signed_up(client, mail_sink)
    also = await login(client, everywhere.email, everywhere.password)
    assert (await client.post("/api/v1/auth/logout-all",
                              headers=everywhere.auth)).status == 204
    await forget(client)
    assert (await client.get(PROBE, headers=person.auth)).status == 200  # the one kept
    assert (await client.get(PROBE, headers=other.auth)).status == 401
    assert (await refresh(client, other.refresh or "")).status == 401
    for gone in (everywhere, also):
        assert (await client.get(PROBE, headers=gone.auth)).status == 401
        assert (await refresh(client, gone.refresh or "")).status == 401


async def _sid(client: Any, session: Any) -> str:
    listed = await (await client.get("/api/v1/auth/sessions", headers=session.auth)).json()
    [current] = [s for s in listed["items"] if s["current"]]
    sid: str = current["id"]
    return sid


async def test_a_persons_transaction_sees_only_their_own_sessions(
        client: Any, mail_sink: Any) -> None:
    mine, theirs = await signed_up(client, mail_sink), await signed_up(client, mail_sink)
    async with service_tx(client.app[keys.DB_POOL], user_id=mine.user_id) as tx:
        # No filter on purpose: row-level security alone keeps the others' rows out.
        owners = {r["user_id"] for r in await tx.fetch("select user_id from sessions")}
    assert owners == {mine.user_id} and theirs.user_id not in owners


async def test_a_rotated_agent_key_stays_refused_after_redis_forgets(
        aiohttp_client: Any, config: Config, mail_sink: Any,
        forgetful_redis: RedisServer) -> None:
    client = await on(aiohttp_client, config, forgetful_redis)
    admin = await signed_up(client, mail_sink)
    agent, old_key = await agent_with_key(client, admin)
    beat = {"version": "1"}
    assert (await client.post("/api/v1/bridge/heartbeat", json=beat,
                              headers=agent_auth(old_key))).status == 200  # now cached
    rotated = await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                headers=admin.auth)
    new_key = (await rotated.json())["api_key"]
    await forget(client)  # the revocation marker goes with everything else
    assert (await client.post("/api/v1/bridge/heartbeat", json=beat,
                              headers=agent_auth(old_key))).status == 401
    assert (await client.post("/api/v1/bridge/heartbeat", json=beat,
                              headers=agent_auth(new_key))).status == 200
    # And the people's sessions came back with it.
    assert (await client.get(PROBE, headers=admin.auth)).status == 200


def _sid_of(session: Any) -> str:
    sid: str = jwt.decode(session.access, options={"verify_signature": False})["sid"]
    return sid


async def test_a_redis_back_without_its_latest_writes_is_rebuilt_before_any_token_is_judged(
        aiohttp_client: Any, config: Config, mail_sink: Any,
        forgetful_redis: RedisServer) -> None:
    """What a replica promoted behind its master does, or a restart from an older snapshot:
    the rebuilt marker is there, the latest writes are not. Each instance sees another
    server on its next connection, and nothing is judged before the rebuild."""
    first = await on(aiohttp_client, config, forgetful_redis)
    second = await on(aiohttp_client, config, forgetful_redis)
    person = await signed_up(first, mail_sink)
    logged_out = await login(first, person.email, person.password)
    rotated = await login(first, person.email, person.password)
    assert (await second.get(PROBE, headers=person.auth)).status == 200
    await first.app[keys.REDIS].save()  # the snapshot the server comes back with
    # Written after the snapshot, so lost with the server:
    assert (await first.post("/api/v1/auth/logout", headers={
        **logged_out.auth, **logged_out.cookie})).status == 204
    fresh = await login(first, person.email, person.password)
    renewed = await refresh(first, rotated.refresh or "")
    assert renewed.status == 200
    renewed_access = (await renewed.json())["access_token"]
    assert forgetful_redis.proc is not None
    forgetful_redis.proc.kill()
    forgetful_redis.proc.wait()
    forgetful_redis.start()
    raw = Redis.from_url(forgetful_redis.url)
    try:  # the server came back with its marker but without those writes
        assert await raw.exists(READY)
        assert await raw.exists(f"sess:{_sid_of(logged_out)}")
        assert not await raw.exists(f"sess:{_sid_of(fresh)}")
    finally:
        await raw.aclose()
    assert (await second.get(PROBE, headers=fresh.auth)).status == 200
    assert (await second.get(PROBE, headers=logged_out.auth)).status == 401
    assert (await refresh(second, logged_out.refresh or "")).status == 401
    assert (await first.get(PROBE, headers=logged_out.auth)).status == 401
    assert (await first.get(PROBE, headers={
        "Authorization": f"Bearer {renewed_access}"})).status == 200
    again = await refresh(first, refresh_cookie_of(renewed) or "")  # the rotation held
    assert again.status == 200, await again.text()
    assert (await refresh(second, fresh.refresh or "")).status == 200
    for alive in (person, fresh):
        assert (await first.get(PROBE, headers=alive.auth)).status == 200


async def test_a_rebuild_that_read_a_session_as_live_does_not_bring_it_back_ended(
        client: Any, mail_sink: Any) -> None:
    """A logout between the rebuild's read of PostgreSQL and its write to Redis."""
    person = await signed_up(client, mail_sink)
    redis = client.app[keys.REDIS]
    async with system_tx(client.app[keys.DB_POOL]) as tx:
        read = [row for row in await session_rows.live(tx) if row.user_id == person.user_id]
    assert len(read) == 1
    assert (await client.post("/api/v1/auth/logout", headers={
        **person.auth, **person.cookie})).status == 204
    async with redis.pipeline(transaction=True) as pipe:
        await session_scripts.restore(redis, pipe, read)
        await pipe.execute()
    assert (await client.get(PROBE, headers=person.auth)).status == 401
    assert (await refresh(client, person.refresh or "")).status == 401


def test_the_run_id_is_read_from_an_info_answer() -> None:
    info = b"# Server\r\nredis_version:7.0.15\r\nrun_id:4f1e0c\r\ntcp_port:6379\r\n"
    assert run_id_of(info) == "4f1e0c"
    assert run_id_of("# Server\r\nredis_version:7.0.15\r\n") == ""


async def test_a_server_marked_stale_again_during_a_rebuild_is_not_called_ready(
        aiohttp_client: Any, config: Config, mail_sink: Any,
        forgetful_redis: RedisServer) -> None:
    client = await on(aiohttp_client, config, forgetful_redis)
    person = await signed_up(client, mail_sink)
    redis, revocation = client.app[keys.REDIS], client.app[REVOCATION]
    await redis.set(STALE, 1)
    await redis.delete(READY)
    await revocation.rebuild()  # began with the mark it clears
    assert await redis.exists(READY) and not await redis.exists(STALE)
    await redis.delete(READY)
    real_get = redis.get

    async def marked_again_meanwhile(name: str) -> Any:
        value = await real_get(name)
        if name == STALE:  # the rebuild has read the mark: another connection raises it
            await redis.incr(STALE)
        return value

    redis.get = marked_again_meanwhile
    try:
        await revocation.rebuild()
    finally:
        del redis.get
    assert not await redis.exists(READY)  # the next one ends the families, then it is ready
    assert (await client.get(PROBE, headers=person.auth)).status == 200
    assert await redis.exists(READY) and not await redis.exists(STALE)
