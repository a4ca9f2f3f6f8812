"""The identity flows of archomata.identity.service without HTTP: each on the real
PostgreSQL and Redis of the harness, with a signed-in person's doors built as a route
builds them (their own scope, and the membership-checked door into another org)."""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from redis.asyncio import Redis

import archomata.access.caller
from archomata.access.principal import ActorType, Principal
from archomata.audit import AuditContext
from archomata.config import Config
from archomata.db import member_tx_of, service_tx, user_tx_of
from archomata.errors import ApiError, BadRequest, Forbidden, NotFound, Unauthorized
from archomata.identity import service
from archomata.identity.reception import Reception
from archomata.identity.signin import Opened, Reason, SignInRefused, password_sign_in
from archomata.identity.store import mail_tokens
from archomata.identity.store.mail_tokens import Purpose
from tests.factories import strong_password
from tests.identity.test_signin import Person, caller, entries, person, reception, second_org

__all__ = ["reception"]  # the fixture, shared with the sign-in's tests


@pytest.fixture
async def redis(config: Config) -> AsyncIterator[Redis]:
    client = Redis.from_url(config.redis_url.reveal())
    yield client
    await client.aclose()


def as_signed_in(opened: Opened) -> AuditContext:
    return AuditContext(ActorType.USER, opened.user.id, ip="203.0.113.9",
                        user_agent="service-test", request_id=secrets.token_hex(8))


def person_of(reception: Reception, opened: Opened) -> archomata.access.caller.Person:
    """The caller as their token names them, with the doors a route gives them."""
    org_id = opened.membership.org.id if opened.membership else None
    principal = Principal(ActorType.USER, opened.user.id, org_id, opened.session.id)
    return archomata.access.caller.Person(
        opened.user.id, org_id, opened.session.id, principal,
        functools.partial(user_tx_of, reception.pool, opened.user.id, org_id),
        functools.partial(member_tx_of, reception.pool, opened.user.id))


async def signed_in(reception: Reception, p: Person) -> Opened:
    return await password_sign_in(reception, caller(), p.user.email, p.password, None)


async def mailed(reception: Reception, p: Person, purpose: Purpose) -> str:
    async with service_tx(reception.pool) as tx:
        return await mail_tokens.issue(tx, p.user.id, purpose, 600)


def code_of(caught: pytest.ExceptionInfo[ApiError]) -> str:
    return caught.value.code


class TestMailLinks:
    async def test_a_link_is_issued_once_a_while_and_never_for_the_ineligible(
            self, reception: Reception, redis: Redis, owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        mail = await service.issue_mail_link(reception, redis, who, p.user.email,
                                             service.reset_link(600))
        assert mail is not None and mail[0] == p.user.email
        async with service_tx(reception.pool) as tx:
            assert await mail_tokens.peek(tx, mail[1], Purpose.PASSWORD_RESET)
        # Within the cooldown, however the address is spelled: nothing new.
        assert await service.issue_mail_link(reception, redis, caller(), p.user.email.upper(),
                                             service.reset_link(600)) is None
        [entry] = await entries(owner_conn, who)
        assert (entry["action"], entry["actor_id"]) == ("auth.password_reset.requested",
                                                        p.user.id)
        # A verified account gets no verification link; an unknown email gets nothing.
        assert await service.issue_mail_link(reception, redis, caller(), p.user.email,
                                             service.verification_link(600)) is None
        assert await service.issue_mail_link(reception, redis, caller(), "nobody@example.org",
                                             service.reset_link(600)) is None

    async def test_a_disabled_account_gets_no_reset_link(
            self, reception: Reception, redis: Redis, owner_conn: Any) -> None:
        p = await person(reception)
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 p.user.id)
        assert await service.issue_mail_link(reception, redis, caller(), p.user.email,
                                             service.reset_link(600)) is None


class TestEmailVerification:
    async def test_a_link_verifies_once(self, reception: Reception, owner_conn: Any) -> None:
        p, who = await person(reception, verified=False), caller()
        token = await mailed(reception, p, Purpose.VERIFY_EMAIL)
        user = await service.verify_email(reception, who, token)
        assert (user.id, user.email_verified) == (p.user.id, True)
        [entry] = await entries(owner_conn, who)
        assert (entry["action"], entry["actor_type"], entry["actor_id"]) == (
            "auth.email.verified", "user", p.user.id)
        with pytest.raises(BadRequest) as caught:
            await service.verify_email(reception, caller(), token)
        assert code_of(caught) == "invalid_token"

    async def test_a_reset_link_does_not_verify(self, reception: Reception) -> None:
        p = await person(reception, verified=False)
        with pytest.raises(BadRequest):
            await service.verify_email(reception, caller(), await mailed(reception, p,
                                                                    Purpose.PASSWORD_RESET))


class TestPasswords:
    async def test_a_reset_sets_the_password_ends_every_session_and_is_spent(
            self, reception: Reception, owner_conn: Any) -> None:
        p = await person(reception)
        await signed_in(reception, p)
        token, new = await mailed(reception, p, Purpose.PASSWORD_RESET), strong_password()
        await service.confirm_password_reset(reception, caller(), token, new)
        assert await reception.sessions.list_for_user(p.user.id) == []
        with pytest.raises(SignInRefused):
            await signed_in(reception, p)
        again = await signed_in(reception, dataclasses.replace(p, password=new))
        assert again.user.id == p.user.id
        with pytest.raises(BadRequest) as caught:
            await service.confirm_password_reset(reception, caller(), token, strong_password())
        assert code_of(caught) == "invalid_token"

    async def test_a_forged_reset_link_costs_no_password_write(
            self, reception: Reception, owner_conn: Any) -> None:
        p = await person(reception)
        before = await owner_conn.fetchval("select password_hash from users where id = $1",
                                           p.user.id)
        with pytest.raises(BadRequest):
            await service.confirm_password_reset(reception, caller(), secrets.token_urlsafe(32),
                                                 strong_password())
        assert await owner_conn.fetchval("select password_hash from users where id = $1",
                                         p.user.id) == before

    async def test_a_change_needs_the_current_password_and_keeps_only_this_session(
            self, reception: Reception, owner_conn: Any) -> None:
        p = await person(reception)
        mine, _other = await signed_in(reception, p), await signed_in(reception, p)
        me, new = person_of(reception, mine), strong_password()
        with pytest.raises(ApiError) as caught:
            await service.change_password(reception, as_signed_in(mine), me, strong_password(), new)
        assert (caught.value.status, code_of(caught)) == (422, "invalid_current_password")
        assert len(await reception.sessions.list_for_user(p.user.id)) == 2
        who = as_signed_in(mine)
        await service.change_password(reception, who, me, p.password, new)
        assert [s.id for s in await reception.sessions.list_for_user(p.user.id)] == [
            mine.session.id]
        assert [e["action"] for e in await entries(owner_conn, who)] == [
            "auth.password.changed"]


class TestSessions:
    async def test_refresh_rotates_and_a_replay_revokes_the_family(
            self, reception: Reception, owner_conn: Any) -> None:
        opened = await signed_in(reception, await person(reception))
        renewed = await service.refresh(reception, caller(), opened.refresh_token)
        assert renewed.session.id == opened.session.id
        assert renewed.refresh_token not in (None, opened.refresh_token)
        assert renewed.refresh_token is not None
        await service.refresh(reception, caller(), renewed.refresh_token)
        who = caller()  # the grandparent: past the tabs' grace window for a parent
        with pytest.raises(Unauthorized) as caught:
            await service.refresh(reception, who, opened.refresh_token)
        assert code_of(caught) == "session_revoked"
        [entry] = await entries(owner_conn, who)
        assert (entry["action"], entry["actor_id"], entry["details"]) == (
            "auth.refresh.reuse_detected", opened.user.id, {"via": "refresh"})
        assert await reception.sessions.list_for_user(opened.user.id) == []

    async def test_refresh_ends_the_session_of_a_disabled_user(
            self, reception: Reception, owner_conn: Any) -> None:
        opened = await signed_in(reception, await person(reception))
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 opened.user.id)
        with pytest.raises(SignInRefused) as caught:
            await service.refresh(reception, caller(), opened.refresh_token)
        assert caught.value.reason is Reason.USER_DISABLED
        assert await reception.sessions.list_for_user(opened.user.id) == []

    async def test_logout_all_ends_every_session_audited(self, reception: Reception,
                                                         owner_conn: Any) -> None:
        p = await person(reception)
        mine, _ = await signed_in(reception, p), await signed_in(reception, p)
        who = as_signed_in(mine)
        await service.logout_all(reception, who, person_of(reception, mine))
        assert await reception.sessions.list_for_user(p.user.id) == []
        assert await owner_conn.fetchval(
            "select tokens_valid_after is not null from users where id = $1", p.user.id)
        [entry] = await entries(owner_conn, who)
        assert (entry["action"], entry["org_id"]) == ("auth.logout_all", p.account.org.id)

    async def test_another_persons_session_answers_as_missing(self, reception: Reception) -> None:
        mine, theirs = (await signed_in(reception, await person(reception)),
                        await signed_in(reception, await person(reception)))
        with pytest.raises(NotFound):
            await service.delete_session(reception, as_signed_in(mine), person_of(reception, mine),
                                         theirs.session.id)
        assert [s.id for s in await reception.sessions.list_for_user(theirs.user.id)] == [
            theirs.session.id]
        await service.delete_session(reception, as_signed_in(mine), person_of(reception, mine),
                                     mine.session.id)
        assert await reception.sessions.list_for_user(mine.user.id) == []

    async def test_logout_by_cookie_ends_the_session_and_a_replay_is_reuse(
            self, reception: Reception, owner_conn: Any) -> None:
        opened = await signed_in(reception, await person(reception))
        renewed = await service.refresh(reception, caller(), opened.refresh_token)
        assert renewed.refresh_token is not None
        await service.refresh(reception, caller(), renewed.refresh_token)
        who = caller()
        await service.logout(reception, who, None, None, opened.refresh_token)  # a stale cookie
        assert [e["action"] for e in await entries(owner_conn, who)] == [
            "auth.refresh.reuse_detected"]
        assert await reception.sessions.list_for_user(opened.user.id) == []


class TestSwitchOrg:
    async def test_the_session_moves_and_the_entry_is_in_the_new_org(
            self, reception: Reception, owner_conn: Any) -> None:
        p = await person(reception)
        other = await second_org(owner_conn, p.user.id)
        opened = await signed_in(reception, p)
        who = as_signed_in(opened)
        renewed = await service.switch_org(reception, who, person_of(reception, opened),
                                           opened.refresh_token, other)
        assert (renewed.session.id, renewed.session.org_id) == (opened.session.id, other)
        assert renewed.membership is not None and renewed.membership.org.id == other
        assert renewed.refresh_token not in (None, opened.refresh_token)
        [entry] = await entries(owner_conn, who)
        assert (entry["action"], entry["org_id"], entry["details"]) == (
            "auth.org.switched", other, {"from_org_id": str(p.account.org.id)})

    async def test_an_org_of_someone_else_is_refused_and_the_session_stays(
            self, reception: Reception, owner_conn: Any) -> None:
        p, stranger = await person(reception), await person(reception)
        opened = await signed_in(reception, p)
        with pytest.raises(SignInRefused) as caught:
            await service.switch_org(reception, as_signed_in(opened), person_of(reception, opened),
                                     None, stranger.account.org.id)
        assert caught.value.reason is Reason.NOT_A_MEMBER
        [live] = await reception.sessions.list_for_user(p.user.id)
        assert live.org_id == p.account.org.id

    @pytest.mark.parametrize("whose", ["stranger", "nobody"])
    async def test_the_door_into_another_org_checks_the_membership_itself(
            self, reception: Reception, whose: str) -> None:
        """Fed an org id the client chose, past any check of the flow, it opens nothing."""
        p = await person(reception)
        org_id = (await person(reception)).account.org.id if whose == "stranger" else uuid4()
        with pytest.raises(Forbidden) as caught:
            async with member_tx_of(reception.pool, p.user.id, org_id) as tx:
                await tx.fetchval("select 1")
        assert code_of(caught) == "not_a_member"
        async with member_tx_of(reception.pool, p.user.id, p.account.org.id) as tx:
            # Opened onto their own org, it reads that org's entries and no one else's.
            assert await tx.fetchval("select array_agg(distinct org_id) from audit_log") == [
                p.account.org.id]
