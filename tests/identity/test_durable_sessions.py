"""Sessions outlive Redis losing its data: kept in PostgreSQL as well (hashes only), put
back before any token is accepted. Access tokens and refresh cookies of live sessions
work again, no one is signed out, and every revocation holds: logged-out and deleted
sessions, reuse-detected families, logout-all, password changes, disabled users."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import jwt
import pytest
from redis.asyncio import Redis

from archomata import keys
from archomata.app import create_app
from archomata.config import Config, Secret
from archomata.db import service_tx, system_tx
from archomata.errors import ServiceUnavailable
from archomata.gate.check import READY, STALE
from archomata.identity import session_scripts
from archomata.identity.revocation import REVOCATION
from archomata.identity.store import session_rows
from archomata.ops.devservers import RedisServer
from tests.factories import (
    agent_auth,
    agent_with_key,
    login,
    member_with_roles,
    platform_admin,
    refresh_cookie_of,
    signed_up,
    strong_password,
)
from tests.identity.test_auth import refresh
from tests.servers.sentinel import SentinelGroup
from tests.serving import serve

PROBE = "/api/v1/org/members"


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


# --- an acknowledged revocation is durable (contract §2) ---------------------------------

@pytest.fixture
async def failing(owner_conn: Any) -> AsyncIterator[Callable[[UUID], Awaitable[None]]]:
    """fail(user): every write to that user's rows of `sessions` raises, as a PostgreSQL
    that refuses the statement would (a trigger, only for the users named, so that the
    rest of the suite is untouched); the fixture's teardown, or heal(), lifts it."""
    await owner_conn.execute("""
        create table if not exists test_failing_sessions (user_id uuid primary key);
        create or replace function test_failing_sessions() returns trigger
            language plpgsql security definer as $$
        begin
            if exists (select 1 from test_failing_sessions where user_id = new.user_id) then
                raise exception 'injected: this sessions write fails';
            end if;
            return new;
        end $$;
        drop trigger if exists test_failing_sessions on sessions;
        create trigger test_failing_sessions before update on sessions
            for each row execute function test_failing_sessions();
    """)

    async def fail(user_id: UUID) -> None:
        await owner_conn.execute("insert into test_failing_sessions values ($1)", user_id)

    yield fail
    await owner_conn.execute("drop trigger test_failing_sessions on sessions; "
                             "drop table test_failing_sessions")


async def audit_actions(owner_conn: Any, session: Any) -> list[str]:
    """The audit entries about ending one session."""
    rows = await owner_conn.fetch("select action from audit_log where resource_id = $1 "
                                  "and action <> 'auth.login.succeeded'", _sid_of(session))
    return [r["action"] for r in rows]


async def heal(owner_conn: Any) -> None:
    await owner_conn.execute("delete from test_failing_sessions")


async def refused_after_a_flush(client: Any, *gone: Any) -> None:
    """Redis forgets; what PostgreSQL holds is all that is left: the sessions stay ended."""
    await forget(client)
    for session in gone:
        assert (await client.get(PROBE, headers=session.auth)).status == 401
        assert (await refresh(client, session.refresh or "")).status == 401


async def test_a_logout_that_could_not_be_written_answers_503_and_its_retry_holds(
        client: Any, mail_sink: Any, owner_conn: Any, failing: Any) -> None:
    person = await signed_up(client, mail_sink)
    leaving = await login(client, person.email, person.password)
    await failing(person.user_id)
    out = await client.post("/api/v1/auth/logout", headers=leaving.cookie)
    assert out.status == 503, await out.text()
    assert (await out.json())["code"] == "service_unavailable"
    await heal(owner_conn)
    again = await client.post("/api/v1/auth/logout", headers=leaving.cookie)  # the retry
    assert again.status == 204
    assert await audit_actions(owner_conn, leaving) == ["auth.logout"]  # written once
    await refused_after_a_flush(client, leaving)
    assert (await client.get(PROBE, headers=person.auth)).status == 200


async def test_a_logout_whose_family_redis_no_longer_holds_is_still_written(
        client: Any, mail_sink: Any) -> None:
    """A family Redis lost while PostgreSQL holds it live (what a Redis-first end left
    behind once its tombstone went): logging out with the access token, which the
    revocation check now refuses, still writes PostgreSQL."""
    person = await signed_up(client, mail_sink)
    leaving = await login(client, person.email, person.password)
    sid, redis = _sid_of(leaving), client.app[keys.REDIS]
    for member in await redis.smembers(f"sessrt:{sid}"):
        await redis.delete(f"rt:{member.decode()}")
    await redis.delete(f"sess:{sid}", f"sessrt:{sid}")  # Redis only, leaving no trace
    assert (await client.get(PROBE, headers=leaving.auth)).status == 401
    assert (await client.post("/api/v1/auth/logout", headers=leaving.auth)).status == 204
    await refused_after_a_flush(client, leaving)


async def test_deleting_a_session_that_could_not_be_written_answers_503_then_holds(
        client: Any, mail_sink: Any, owner_conn: Any, failing: Any) -> None:
    person = await signed_up(client, mail_sink)
    other = await login(client, person.email, person.password)
    stranger = await signed_up(client, mail_sink)
    await failing(person.user_id)
    path = f"/api/v1/auth/sessions/{_sid_of(other)}"
    assert (await client.delete(path, headers=person.auth)).status == 503
    await heal(owner_conn)
    # Another person's session, even one Redis holds, is no one else's to end.
    assert (await client.delete(path, headers=stranger.auth)).status == 404
    assert (await client.get(PROBE, headers=other.auth)).status == 200
    assert (await client.delete(path, headers=person.auth)).status == 204
    assert (await client.delete(path, headers=person.auth)).status == 404
    await refused_after_a_flush(client, other)
    assert (await client.get(PROBE, headers=stranger.auth)).status == 200


async def test_a_reuse_that_could_not_be_written_answers_503_and_its_retry_ends_the_family(
        client: Any, mail_sink: Any, owner_conn: Any, failing: Any) -> None:
    person = await signed_up(client, mail_sink)
    stolen = await login(client, person.email, person.password)
    first = refresh_cookie_of(await refresh(client, stolen.refresh or ""))
    current = await refresh(client, first or "")
    assert current.status == 200
    await failing(person.user_id)
    assert (await refresh(client, stolen.refresh or "")).status == 503  # the grandparent
    await heal(owner_conn)
    replay = await refresh(client, stolen.refresh or "")
    assert replay.status == 401
    assert await audit_actions(owner_conn, stolen) == ["auth.refresh.reuse_detected"]
    assert (await refresh(client, refresh_cookie_of(current) or "")).status == 401
    await forget(client)
    assert (await refresh(client, refresh_cookie_of(current) or "")).status == 401
    assert (await client.get(PROBE, headers=stolen.auth)).status == 401


async def test_a_rotation_is_handed_out_only_once_postgres_holds_it(
        client: Any, mail_sink: Any, owner_conn: Any, failing: Any) -> None:
    person = await signed_up(client, mail_sink)
    await failing(person.user_id)
    failed = await refresh(client, person.refresh or "")
    assert failed.status == 503
    assert refresh_cookie_of(failed) is None
    await heal(owner_conn)
    retried = await refresh(client, person.refresh or "")  # the parent, inside the window
    assert retried.status == 200, await retried.text()
    successor = refresh_cookie_of(retried)
    await forget(client)  # rebuilt from PostgreSQL: it has the successor
    assert (await refresh(client, successor or "")).status == 200


async def test_the_stores_end_of_a_family_is_postgres_first(
        client: Any, mail_sink: Any, owner_conn: Any, failing: Any) -> None:
    """The end open_session makes of a session whose password changed meanwhile, and
    refresh of one whose user may no longer sign in (SessionStore.revoke)."""
    person = await signed_up(client, mail_sink)
    sid, store = UUID(_sid_of(person)), client.app[keys.SESSIONS]
    await failing(person.user_id)
    with pytest.raises(ServiceUnavailable):
        await store.revoke(sid, person.user_id)
    assert (await client.get(PROBE, headers=person.auth)).status == 200  # not acknowledged
    await heal(owner_conn)
    assert await store.revoke(sid, person.user_id)
    await refused_after_a_flush(client, person)


async def test_a_write_stuck_behind_a_lock_answers_503_not_504(
        aiohttp_client: Any, config: Config, mail_sink: Any, owner_conn: Any) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(
        config, request_timeout_seconds=3)))
    person = await signed_up(client, mail_sink)
    leaving = await login(client, person.email, person.password)
    holding = owner_conn.transaction()
    await holding.start()
    try:
        await owner_conn.execute("select 1 from sessions where id = $1 for update",
                                 UUID(_sid_of(leaving)))
        out = await client.post("/api/v1/auth/logout", headers=leaving.auth)
        assert out.status == 503
    finally:
        await holding.rollback()
    assert (await client.post("/api/v1/auth/logout", headers=leaving.auth)).status == 204
    await refused_after_a_flush(client, leaving)


# --- the grace window outlives a data key (contract §5, rotate-data-key) ------------------

async def test_the_parent_gets_the_same_successor_on_an_instance_with_another_data_key(
        aiohttp_client: Any, config: Config, mail_sink: Any, owner_conn: Any) -> None:
    old = await aiohttp_client(create_app(config))
    rotated = await aiohttp_client(create_app(dataclasses.replace(
        config, data_key=Secret(secrets.token_bytes(32)),
        data_key_previous=(config.data_key,))))
    person = await signed_up(old, mail_sink)
    first = await refresh(old, person.refresh or "")
    successor = refresh_cookie_of(first)
    again = await refresh(rotated, person.refresh or "")  # another tab, the other instance
    assert again.status == 200, await again.text()
    assert refresh_cookie_of(again) == successor
    await forget(rotated)  # and after a rebuild from PostgreSQL, still inside the window
    third = await refresh(old, person.refresh or "")
    assert third.status == 200 and refresh_cookie_of(third) == successor
    assert "auth.refresh.reuse_detected" not in await audit_actions(owner_conn, person)
    assert (await refresh(rotated, successor or "")).status == 200


# --- a Redis restored from an older snapshot is caught by a process that starts ---------

async def test_a_service_started_on_a_redis_restored_from_an_older_snapshot_rebuilds_it(
        aiohttp_client: Any, config: Config, environ: dict[str, str], mail_sink: Any,
        owner_conn: Any, forgetful_redis: RedisServer, tmp_path: Path) -> None:
    """The issue's host reboot with an older AOF: the service and Redis stop, Redis comes
    back with a snapshot taken after the last rebuild (its marker is there) and before a
    logout, a disabled user, a disabled org, a removed role and a logout-all; a service
    process that starts now has no previous server to compare, and still refuses each."""
    before = await on(aiohttp_client, config, forgetful_redis)
    admin = await signed_up(before, mail_sink)
    assert admin.org_id is not None
    leaving = await login(before, admin.email, admin.password)
    member = await member_with_roles(before, mail_sink, owner_conn, admin.org_id, ["Viewer"])
    doomed, cut_off, everywhere = [await signed_up(before, mail_sink) for _ in range(3)]
    root = await platform_admin(before, config)
    everyone = (admin, leaving, member, doomed, cut_off, everywhere)
    for person in everyone:  # rebuilt and cached: the marker is in the snapshot
        assert (await before.get("/api/v1/accounts", headers=person.auth)).status == 200
    await before.app[keys.REDIS].save()  # what Redis will come back with
    # Written after the snapshot, each in PostgreSQL and in Redis:
    assert (await before.post("/api/v1/auth/logout", headers={
        **leaving.auth, **leaving.cookie})).status == 204
    assert (await before.patch(f"/api/v1/admin/users/{doomed.user_id}", headers=root.auth,
                               json={"disabled": True})).status == 200
    assert (await before.post(f"/api/v1/admin/orgs/{cut_off.org_id}/disable",
                              headers=root.auth)).status == 200
    assert (await before.put(f"/api/v1/org/members/{member.user_id}/roles",
                             headers=admin.auth, json={"role_ids": []})).status == 200
    assert (await before.post("/api/v1/auth/logout-all",
                              headers=everywhere.auth)).status == 204
    assert forgetful_redis.proc is not None
    forgetful_redis.proc.kill()  # the host goes down
    forgetful_redis.proc.wait()
    forgetful_redis.start()  # and comes back with the older snapshot
    raw = Redis.from_url(forgetful_redis.url)
    try:  # the marker of before, and none of those writes
        assert await raw.exists(READY)
        assert await raw.exists(f"sess:{_sid_of(leaving)}")
        assert not await raw.exists(f"rv:org:{cut_off.org_id}")
        assert not await raw.hget(f"rv:user:{doomed.user_id}", "disabled")
    finally:
        await raw.aclose()
    served = await serve(environ, tmp_path, redis_url=forgetful_redis.url)
    try:
        async with aiohttp.ClientSession(served.url) as after:
            async def status(person: Any, path: str = "/api/v1/accounts") -> int:
                return (await after.get(path, headers=person.auth)).status

            assert await status(leaving) == 401
            assert await status(doomed) == 401
            assert await status(cut_off) == 401
            assert await status(member) == 403  # a member still, with no role left
            assert await status(everywhere) == 401
            for gone in (leaving, everywhere):
                assert (await refresh(after, gone.refresh or "")).status == 401
            assert await status(admin) == 200  # and no one else was signed out
            assert (await refresh(after, admin.refresh or "")).status == 200
    finally:
        await served.ended()


async def test_logout_all_and_a_password_change_that_could_not_be_written_answer_503(
        client: Any, mail_sink: Any, owner_conn: Any, failing: Any) -> None:
    """The ends made in the caller's transaction: PostgreSQL's statement first, so its
    failure is a 503 with nothing ended anywhere, and the retry ends them for good."""
    everywhere = await signed_up(client, mail_sink)
    also = await login(client, everywhere.email, everywhere.password)
    changing = await signed_up(client, mail_sink)
    other = await login(client, changing.email, changing.password)
    await failing(everywhere.user_id)
    await failing(changing.user_id)
    assert (await client.post("/api/v1/auth/logout-all",
                              headers=everywhere.auth)).status == 503
    change = {"current_password": changing.password, "new_password": strong_password()}
    assert (await client.post("/api/v1/auth/password/change", headers=changing.auth,
                              json=change)).status == 503
    for untouched in (also, other):  # not acknowledged: nothing half done
        assert (await client.get(PROBE, headers=untouched.auth)).status == 200
    await heal(owner_conn)
    assert (await client.post("/api/v1/auth/logout-all",
                              headers=everywhere.auth)).status == 204
    assert (await client.post("/api/v1/auth/password/change", headers=changing.auth,
                              json=change)).status == 204
    await refused_after_a_flush(client, everywhere, also, other)
    assert (await client.get(PROBE, headers=changing.auth)).status == 200  # the one kept
