"""A revoked session stays dead on every path, and a token cut-off is exact: a token minted
before it dies, one minted after it lives, even within one second. Real servers."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from archomata.db import service_tx
from archomata.gate.check import READY
from archomata.identity.passwords import Lane, PasswordHasher
from tests.factories import (
    FRONTEND,
    Session,
    login,
    platform_admin,
    refresh_cookie_of,
    signed_up,
    strong_password,
    wait_for_mail,
)
from tests.identity.test_auth import _second_org_for, audit_actions, refresh

ROUNDS = 15


def _sid(access: str) -> str:
    return str(jwt.decode(access, options={"verify_signature": False})["sid"])


async def _me(client: Any, access: str) -> int:
    response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {access}"})
    return int(response.status)


async def _switch(client: Any, access: str, org_id: UUID, cookie: str | None) -> Any:
    headers = {"Authorization": f"Bearer {access}", "Origin": FRONTEND}
    if cookie is not None:
        headers["Cookie"] = f"archomata_refresh={cookie}"
    return await client.post("/api/v1/auth/switch-org", json={"org_id": str(org_id)},
                             headers=headers)


async def _tokens_of(response: Any) -> tuple[str | None, str | None]:
    """The access token and refresh cookie a response handed out, if any."""
    if response.status != 200:
        return None, None
    return (await response.json())["access_token"], refresh_cookie_of(response)


@dataclass
class Flight:
    """When a request was sent and answered (monotonic), and how it was answered: two
    flights overlapping is what a race test must see to have tested a race."""

    sent: float
    answered: float
    response: Any

    @property
    def status(self) -> int:
        return int(self.response.status)

    def overlaps(self, other: Flight) -> bool:
        return self.sent < other.answered and other.sent < self.answered


async def _flight(request: Awaitable[Any]) -> Flight:
    sent = time.monotonic()
    response = await request
    return Flight(sent, time.monotonic(), response)


def _inside_next_hash(hasher: PasswordHasher,
                      step: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Runs `step` to its end inside `hasher`'s next hash(), then lets that hash go on:
    the flow that asked for it has proven a password and not yet written what it
    computes, the contended point of the password races. The returned list receives what
    `step` returned once it has run (empty: the race never happened). Hashes that `step`
    itself asks for pass through."""
    ran: list[Any] = []
    real = hasher.hash
    started = False

    async def hash_with_step_inside(password: str, lane: Lane = Lane.PEOPLE) -> str:
        nonlocal started
        if not started:
            started = True
            ran.append(await step())
        return await real(password, lane)

    hasher.hash = hash_with_step_inside  # type: ignore[method-assign]
    return ran


async def _until_early_in_a_second() -> None:
    """So that what follows most likely runs within one wall-clock second, where whole
    seconds cannot tell before from after (the checks hold whatever the timing)."""
    fraction = time.time() % 1
    if fraction > 0.2:
        await asyncio.sleep(1.0 - fraction)


class TestReplayedCookies:
    async def test_switch_org_with_a_grandparent_cookie_revokes_the_family_and_says_so(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        other_org = await _second_org_for(client, mail_sink, owner_conn, me.user_id)
        assert me.refresh is not None
        first = await refresh(client, me.refresh)
        first_cookie = refresh_cookie_of(first)
        assert first_cookie is not None
        second = await refresh(client, first_cookie)
        access, current = await _tokens_of(second)
        assert access is not None and current is not None

        replay = await _switch(client, access, other_org, me.refresh)
        assert replay.status == 401
        assert (await replay.json())["code"] == "session_revoked"
        assert await _me(client, access) == 401
        assert (await refresh(client, current)).status == 401
        # Nothing brought the session back afterwards, with or without a cookie.
        assert (await _switch(client, access, other_org, None)).status == 401
        assert not await client.app[keys.REDIS].exists(f"sess:{_sid(access)}")
        assert "auth.refresh.reuse_detected" in await audit_actions(owner_conn,
                                                                    actor_id=me.user_id)

    async def test_logout_with_a_replayed_cookie_is_audited_as_a_reuse(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        assert me.refresh is not None
        first_cookie = refresh_cookie_of(await refresh(client, me.refresh))
        assert first_cookie is not None
        current = refresh_cookie_of(await refresh(client, first_cookie))
        assert current is not None
        out = await client.post("/api/v1/auth/logout", headers={
            "Cookie": f"archomata_refresh={me.refresh}", "Origin": FRONTEND})
        assert out.status == 204
        assert (await refresh(client, current)).status == 401
        rows = await owner_conn.fetch(
            "select action, details from audit_log where actor_id = $1 and action in "
            "('auth.refresh.reuse_detected', 'auth.logout')", me.user_id)
        assert [r["action"] for r in rows] == ["auth.refresh.reuse_detected"]
        assert '"logout"' in rows[0]["details"]

    async def test_logout_with_the_current_cookie_is_a_plain_logout(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        out = await client.post("/api/v1/auth/logout", headers=me.cookie)
        assert out.status == 204
        again = await client.post("/api/v1/auth/logout", headers=me.cookie)
        assert again.status == 204
        actions = await audit_actions(owner_conn, actor_id=me.user_id)
        assert actions.count("auth.logout") == 1  # the second found nothing to end
        assert "auth.refresh.reuse_detected" not in actions


class TestDeleteRacingEveryWrite:
    async def test_after_the_delete_the_session_is_dead_and_stays_dead(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        keeper = await signed_up(client, mail_sink)
        other_org = await _second_org_for(client, mail_sink, owner_conn, keeper.user_id)
        redis = client.app[keys.REDIS]
        got_in = 0  # writes that handed out tokens while the delete was in flight
        for _ in range(ROUNDS):
            victim = await login(client, keeper.email, keeper.password)
            assert victim.refresh is not None
            sid = _sid(victim.access)
            flights = await asyncio.gather(
                _flight(client.delete(f"/api/v1/auth/sessions/{sid}", headers=keeper.auth)),
                _flight(_switch(client, victim.access, other_org, victim.refresh)),
                _flight(_switch(client, victim.access, other_org, None)),
                _flight(refresh(client, victim.refresh)))
            results = [f.response for f in flights]
            assert results[0].status == 204
            got_in += sum(f.status == 200 and f.overlaps(flights[0]) for f in flights[1:])
            handed_out = [await _tokens_of(r) for r in results[1:]]
            accesses = [victim.access] + [a for a, _ in handed_out if a]
            cookies = [victim.refresh] + [c for _, c in handed_out if c]
            for _ in range(2):  # dead, and still dead after trying to revive it
                assert [await _me(client, a) for a in accesses] == [401] * len(accesses)
                for access in accesses:
                    assert (await _switch(client, access, other_org, None)).status == 401
                for cookie in cookies:
                    assert (await refresh(client, cookie)).status == 401
                assert not await redis.exists(f"sess:{sid}")
        assert (await client.get("/api/v1/me", headers=keeper.auth)).status == 200
        # Some write got its tokens with the delete under way: the race was run, not only
        # a delete that always came first.
        assert got_in > 0


class TestCutOffs:
    async def test_a_login_in_the_same_second_right_after_logout_all_lives(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        await _until_early_in_a_second()
        assert (await client.post("/api/v1/auth/logout-all", headers=me.auth)).status == 204
        after = await login(client, me.email, me.password)
        assert await _me(client, after.access) == 200
        assert after.refresh is not None
        assert (await refresh(client, after.refresh)).status == 200
        assert await _me(client, me.access) == 401

    async def test_a_role_change_kills_tokens_before_it_and_spares_those_after(
            self, client: Any, config: Config, mail_sink: Any) -> None:
        member = await signed_up(client, mail_sink)
        admin = await platform_admin(client, config)
        await _until_early_in_a_second()
        before = await login(client, member.email, member.password)
        changed = await client.patch(f"/api/v1/admin/users/{member.user_id}",
                                     json={"platform_role": "platform_administrator"},
                                     headers=admin.auth)
        assert changed.status == 200
        after = await login(client, member.email, member.password)
        assert before.refresh is not None
        refreshed, _ = await _tokens_of(await refresh(client, before.refresh))
        assert refreshed is not None
        assert await _me(client, before.access) == 401  # same second, minted before
        assert await _me(client, member.access) == 401
        assert await _me(client, after.access) == 200  # same second, minted after
        assert await _me(client, refreshed) == 200
        claims = jwt.decode(after.access, options={"verify_signature": False})
        assert claims["prole"] == "platform_administrator"

    async def test_the_rebuilt_state_keeps_the_cut_exact(
            self, client: Any, config: Config, mail_sink: Any) -> None:
        """PostgreSQL keeps the cut to the microsecond: rebuilt, it still tells a token
        minted just before it from one minted just after."""
        member = await signed_up(client, mail_sink)
        admin = await platform_admin(client, config)
        await _until_early_in_a_second()
        before = await login(client, member.email, member.password)
        changed = await client.patch(f"/api/v1/admin/users/{member.user_id}",
                                     json={"platform_role": "platform_administrator"},
                                     headers=admin.auth)
        assert changed.status == 200
        after = await login(client, member.email, member.password)
        redis = client.app[keys.REDIS]
        await redis.delete(f"rv:user:{member.user_id}", READY)  # lost, then rebuilt
        assert await _me(client, after.access) == 200
        assert await redis.exists(READY)
        assert await _me(client, before.access) == 401

    async def test_a_rebuild_never_lowers_a_cut_already_in_force(
            self, client: Any, mail_sink: Any) -> None:
        """A cut whose transaction has not committed yet is in Redis but not in
        PostgreSQL; a rebuild running then must not undo it."""
        me = await signed_up(client, mail_sink)
        redis = client.app[keys.REDIS]
        async with service_tx(client.app[keys.DB_POOL], user_id=me.user_id) as tx:
            await client.app[keys.SESSIONS].cut_off(tx, me.user_id, end_sessions=False)
        after = await login(client, me.email, me.password)
        await redis.delete(READY)
        assert await _me(client, after.access) == 200  # rebuilds first
        assert await redis.exists(READY)
        assert await _me(client, me.access) == 401


class TestLoginRacingAPasswordChange:
    async def test_no_session_proven_by_the_old_password_survives(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        # bcrypt a little slower, so that logins are mid-flight when the change commits;
        # the old password's refusals are no attack to back off from here.
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, bcrypt_rounds=6, login_backoff_after=1000)))
        got_in = 0  # old-password logins answered 200 while the change was in flight
        for _ in range(4):
            me = await signed_up(client, mail_sink)
            new_password = strong_password()

            async def change(me: Session = me, new_password: str = new_password) -> Any:
                await asyncio.sleep(0.01)
                return await client.post("/api/v1/auth/password/change", headers=me.auth,
                                         json={"current_password": me.password,
                                               "new_password": new_password})

            async def old_login(me: Session = me, delay: float = 0.0) -> Any:
                await asyncio.sleep(delay)
                return await client.post("/api/v1/auth/login", json={
                    "email": me.email, "password": me.password})

            flights = await asyncio.gather(
                _flight(change()), *(_flight(old_login(delay=i * 0.004)) for i in range(16)))
            results = [f.response for f in flights]
            assert results[0].status == 204, await results[0].text()
            got_in += sum(f.status == 200 and f.overlaps(flights[0]) for f in flights[1:])
            for response in results[1:]:
                assert response.status in (200, 401), await response.text()
                access, cookie = await _tokens_of(response)
                if access is None:
                    continue
                assert await _me(client, access) == 401
                assert cookie is not None
                assert (await refresh(client, cookie)).status == 401
            assert await _me(client, me.access) == 200  # the changing session lives on
            await login(client, me.email, new_password)
        assert got_in > 0  # else no login raced the change, and nothing above was tested

    async def test_a_hash_upgrade_racing_a_change_does_not_bring_the_old_password_back(
            self, aiohttp_client: Any, config: Config, mail_sink: Any,
            owner_conn: Any) -> None:
        relaxed = dataclasses.replace(config, login_backoff_after=1000)
        weak = await aiohttp_client(create_app(relaxed))
        stronger = await aiohttp_client(create_app(dataclasses.replace(
            relaxed, bcrypt_rounds=config.bcrypt_rounds + 2)))
        me = await signed_up(weak, mail_sink)
        new_password = strong_password()
        # The login has proven the old password and computes its upgrade: the change
        # commits right then, before the upgrade is written.
        changed = _inside_next_hash(stronger.app[keys.PASSWORDS], lambda: weak.post(
            "/api/v1/auth/password/change", headers=me.auth,
            json={"current_password": me.password, "new_password": new_password}))
        upgrading = await stronger.post("/api/v1/auth/login",
                                        json={"email": me.email, "password": me.password})
        assert [r.status for r in changed] == [204]  # the race was run, at its worst point
        assert upgrading.status in (200, 401), await upgrading.text()
        access, _ = await _tokens_of(upgrading)
        assert access is None or await _me(stronger, access) == 401
        old = await weak.post("/api/v1/auth/login",
                              json={"email": me.email, "password": me.password})
        assert old.status == 401
        await login(weak, me.email, new_password)

    async def test_logins_upgrading_the_same_hash_at_once_all_get_in(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        """Their upgrades move the hash under one another: no change of password, so
        none of them is refused for it."""
        weak = await aiohttp_client(create_app(config))
        stronger = await aiohttp_client(create_app(dataclasses.replace(
            config, bcrypt_rounds=config.bcrypt_rounds + 2)))
        me = await signed_up(weak, mail_sink)
        results = await asyncio.gather(*(stronger.post("/api/v1/auth/login", json={
            "email": me.email, "password": me.password}) for _ in range(8)))
        assert [r.status for r in results] == [200] * 8
        for response in results:
            access, _ = await _tokens_of(response)
            assert access is not None and await _me(stronger, access) == 200

    async def test_a_change_proven_by_the_old_password_never_undoes_a_reset(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, login_backoff_after=1000)))
        me = await signed_up(client, mail_sink)
        await client.post("/api/v1/auth/password-reset/request", json={"email": me.email})
        token = await wait_for_mail(mail_sink, me.email, "reset")
        by_mail, by_change = strong_password(), strong_password()
        # The change has proven the old password and hashes its new one: the reset
        # commits right then, before the change writes.
        reset = _inside_next_hash(client.app[keys.PASSWORDS], lambda: client.post(
            "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": by_mail}))
        change = await client.post("/api/v1/auth/password/change", headers=me.auth, json={
            "current_password": me.password, "new_password": by_change})
        assert [r.status for r in reset] == [204]  # the race was run, at its worst point
        assert change.status == 422, await change.text()
        assert (await change.json())["code"] == "invalid_current_password"
        # The mailbox owner's password is the one that holds.
        await login(client, me.email, by_mail)
        refused = await client.post("/api/v1/auth/login",
                                    json={"email": me.email, "password": by_change})
        assert refused.status == 401


class TestResetHoldingItsLinkWhileAChangeWrites:
    async def test_the_two_take_their_locks_in_one_order_and_never_deadlock(
            self, aiohttp_client: Any, config: Config, mail_sink: Any,
            owner_conn: Any) -> None:
        """A reset confirm locks its link (spending it), then the user's row; a change
        must take them in that order too. Here the owner connection plays the reset: it
        holds the link while the change runs, then writes the user's row. Taken the other
        way round, the change would hold the row and wait on the link: PostgreSQL breaks
        the deadlock by killing one side, and the change answered 500."""
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, login_backoff_after=1000)))
        me = await signed_up(client, mail_sink)
        await client.post("/api/v1/auth/password-reset/request", json={"email": me.email})
        await wait_for_mail(mail_sink, me.email, "reset")
        user_id = me.user_id
        async with owner_conn.transaction():
            spent = await owner_conn.execute(
                "update mail_tokens set used_at = now() where user_id = $1"
                " and purpose = 'password_reset' and used_at is null", user_id)
            assert spent == "UPDATE 1"
            change = asyncio.ensure_future(client.post(
                "/api/v1/auth/password/change", headers=me.auth,
                json={"current_password": me.password, "new_password": strong_password()}))
            for _ in range(500):  # until the change waits on a lock the reset holds
                # pg_locks, not pg_stat_activity: the owner may not read another role's
                waiting = await owner_conn.fetchval(
                    "select count(distinct pid) from pg_locks where not granted")
                if waiting or change.done():
                    break
                await asyncio.sleep(0.02)
            assert waiting == 1, "the change never reached the link the reset holds"
            await owner_conn.execute(
                "update users set password_hash = password_hash, updated_at = now()"
                " where id = $1", user_id)
        answer = await change
        assert answer.status in (204, 422), await answer.text()
