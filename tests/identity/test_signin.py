"""The sign-in without HTTP: each rule on the real PostgreSQL and Redis of the
harness, the refusal audited, no session left behind by a refused sign-in."""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest
from redis.asyncio import Redis

from archomata.access.principal import ActorType
from archomata.audit import AuditContext
from archomata.config import Config
from archomata.db import create_pool, service_tx
from archomata.errors import ApiError
from archomata.identity.login_throttle import LoginThrottle
from archomata.identity.onboarding import NewAccount, create_user_with_org, ensure_platform_admin
from archomata.identity.passwords import PasswordHasher
from archomata.identity.reception import Reception
from archomata.identity.sessions import SessionStore
from archomata.identity.signin import (
    Attempt,
    Reason,
    SecondFactorRequired,
    SignInRefused,
    Via,
    open_session,
    password_sign_in,
    vet,
)
from archomata.identity.store.users import User
from archomata.identity.web import problem
from tests.factories import strong_password, unique_email


@pytest.fixture
async def reception(config: Config) -> AsyncIterator[Reception]:
    pool = await create_pool(config.database_url.reveal(), config)
    redis = Redis.from_url(config.redis_url.reveal())
    hasher = PasswordHasher(config.bcrypt_rounds, 1)
    throttle = LoginThrottle(redis, free_failures=config.login_backoff_after,
                             max_seconds=config.login_backoff_max_seconds)
    # Kept in PostgreSQL too, as the app keeps them: a family ends there first.
    sessions = SessionStore(redis, config, lambda user_id, org_id=None: service_tx(
        pool, org_id=org_id, user_id=user_id))
    yield Reception(pool, sessions, hasher, throttle)
    hasher.close()
    await redis.aclose()
    await pool.close()


def caller() -> AuditContext:
    """Someone not signed in, from a known address; the request id finds their entries."""
    return AuditContext(ActorType.SYSTEM, None, ip="203.0.113.7", user_agent="door-test",
                        request_id=secrets.token_hex(8))


@dataclasses.dataclass
class Person:
    account: NewAccount
    password: str

    @property
    def user(self) -> User:
        return self.account.user


async def person(reception: Reception, *, verified: bool = True) -> Person:
    password = strong_password()
    account = await create_user_with_org(
        reception.pool, AuditContext.system(), email=unique_email("door"), name="Reception Person",
        password_hash=await reception.passwords.hash(password), org_name="Reception Org",
        verified=verified)
    return Person(account, password)


async def second_org(owner_conn: Any, user_id: UUID, *, disabled: bool = False) -> UUID:
    org_id: UUID = await owner_conn.fetchval(
        "insert into orgs (name, disabled_at) values ('Second', "
        "case when $1 then now() end) returning id", disabled)
    await owner_conn.execute("insert into memberships (org_id, user_id, org_role) "
                             "values ($1, $2, 'member')", org_id, user_id)
    return org_id


async def entries(owner_conn: Any, who: AuditContext) -> list[dict[str, Any]]:
    rows = await owner_conn.fetch(
        "select action, actor_type, actor_id, org_id, resource_type, resource_id, "
        "host(ip) as ip, user_agent, details from audit_log where request_id = $1 "
        "order by seq", who.request_id)
    return [{**dict(r), "details": json.loads(r["details"])} for r in rows]


async def refused(reception: Reception, owner_conn: Any, who: AuditContext, user: User,
                  reason: Reason) -> None:
    """The sign-in's answer to a refusal: one entry naming the user and the reason, and no
    session of theirs alive."""
    failed = [e for e in await entries(owner_conn, who) if e["action"] == "auth.login.failed"]
    assert [(e["actor_id"], e["resource_id"], e["details"]["reason"]) for e in failed] == [
        (user.id, str(user.id), reason.value)]
    assert await reception.sessions.list_for_user(user.id) == []


async def sign_in(reception: Reception, who: AuditContext, p: Person,
                  org_id: UUID | None = None) -> Any:
    return await password_sign_in(reception, who, p.user.email, p.password, org_id)


class TestTheRules:
    async def test_a_session_opens_and_its_entry_is_written_with_it(
            self, reception: Reception, owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        opened = await sign_in(reception, who, p)
        assert opened.membership.org.id == p.account.org.id
        assert opened.session.org_id == p.account.org.id
        [live] = await reception.sessions.list_for_user(p.user.id)
        assert (live.id, live.ip, live.user_agent) == (opened.session.id, "203.0.113.7",
                                                       "door-test")
        [entry] = await entries(owner_conn, who)
        assert entry == {"action": "auth.login.succeeded", "actor_type": "user",
                         "actor_id": p.user.id, "org_id": p.account.org.id,
                         "resource_type": "session", "resource_id": str(opened.session.id),
                         "ip": "203.0.113.7", "user_agent": "door-test", "details": {}}

    async def test_an_unverified_email_is_refused(self, reception: Reception,
                                                  owner_conn: Any) -> None:
        p, who = await person(reception, verified=False), caller()
        with pytest.raises(SignInRefused) as caught:
            await sign_in(reception, who, p)
        assert (caught.value.reason, caught.value.user_id) == (Reason.EMAIL_NOT_VERIFIED,
                                                               p.user.id)
        await refused(reception, owner_conn, who, p.user, Reason.EMAIL_NOT_VERIFIED)

    async def test_a_proof_through_the_mailbox_stands_for_a_verified_email(
            self, reception: Reception, owner_conn: Any) -> None:
        p = await person(reception, verified=False)
        opened = await open_session(reception, caller(), Attempt(p.user, Via.INVITATION,
                                                            mailbox_proven=True))
        assert opened.user.id == p.user.id

    async def test_a_disabled_user_is_refused(self, reception: Reception, owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 p.user.id)
        with pytest.raises(SignInRefused) as caught:
            await sign_in(reception, who, p)
        assert caught.value.reason is Reason.USER_DISABLED
        await refused(reception, owner_conn, who, p.user, Reason.USER_DISABLED)

    async def test_a_user_disabled_while_the_session_opens_loses_it(
            self, reception: Reception, owner_conn: Any) -> None:
        """The rules judge the row as it stands once the session exists too."""
        p, who = await person(reception), caller()
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 p.user.id)
        with pytest.raises(SignInRefused) as caught:  # `p.user` is the row read before
            await open_session(reception, who, Attempt(p.user, Via.PASSWORD))
        assert caught.value.reason is Reason.USER_DISABLED
        await refused(reception, owner_conn, who, p.user, Reason.USER_DISABLED)

    async def test_a_password_changed_since_the_proof_ends_the_session(
            self, reception: Reception, owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        await owner_conn.execute("update users set password_hash = $2 where id = $1",
                                 p.user.id, await reception.passwords.hash(strong_password()))
        with pytest.raises(SignInRefused) as caught:
            await open_session(reception, who, Attempt(p.user, Via.PASSWORD))
        assert caught.value.reason is Reason.CREDENTIALS_CHANGED
        await refused(reception, owner_conn, who, p.user, Reason.CREDENTIALS_CHANGED)

    async def test_a_change_meant_to_wait_for_a_factor_removed_meanwhile_is_refused(
            self, reception: Reception, owner_conn: Any) -> None:
        """A way in saw a second factor and held its change for it; the factor went
        before the session opened: neither made without it nor dropped, but refused."""
        p, who = await person(reception), caller()
        held = {"kind": "link", "org_id": None, "provider": "google", "subject": "s",
                "email": p.user.email}
        with pytest.raises(SignInRefused) as caught:
            await open_session(reception, who, Attempt(p.user, Via.SSO, pending=held))
        assert caught.value.reason is Reason.CREDENTIALS_CHANGED
        await refused(reception, owner_conn, who, p.user, Reason.CREDENTIALS_CHANGED)

    async def test_a_disabled_org_asked_for_is_refused(self, reception: Reception,
                                                       owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        await owner_conn.execute("update orgs set disabled_at = now() where id = $1",
                                 p.account.org.id)
        with pytest.raises(SignInRefused) as caught:
            await sign_in(reception, who, p, org_id=p.account.org.id)
        assert caught.value.reason is Reason.ORG_DISABLED
        await refused(reception, owner_conn, who, p.user, Reason.ORG_DISABLED)

    async def test_every_org_disabled_is_refused_and_one_enabled_is_chosen(
            self, reception: Reception, owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        await owner_conn.execute("update orgs set disabled_at = now() where id = $1",
                                 p.account.org.id)
        with pytest.raises(SignInRefused) as caught:
            await sign_in(reception, who, p)
        assert caught.value.reason is Reason.EVERY_ORG_DISABLED
        await refused(reception, owner_conn, who, p.user, Reason.EVERY_ORG_DISABLED)
        enabled = await second_org(owner_conn, p.user.id)
        opened = await sign_in(reception, caller(), p)
        assert opened.membership.org.id == enabled == opened.session.org_id

    async def test_the_org_asked_for_is_the_one_signed_into(
            self, reception: Reception, owner_conn: Any) -> None:
        p = await person(reception)
        other = await second_org(owner_conn, p.user.id)
        assert (await sign_in(reception, caller(), p)).membership.org.id == p.account.org.id
        opened = await sign_in(reception, caller(), p, org_id=other)
        assert (opened.membership.org.id, opened.session.org_id) == (other, other)

    async def test_an_org_not_ones_own_is_refused(self, reception: Reception,
                                                  owner_conn: Any) -> None:
        p, stranger, who = await person(reception), await person(reception), caller()
        with pytest.raises(SignInRefused) as caught:
            await sign_in(reception, who, p, org_id=stranger.account.org.id)
        assert caught.value.reason is Reason.NOT_A_MEMBER
        await refused(reception, owner_conn, who, p.user, Reason.NOT_A_MEMBER)

    async def test_someone_of_no_org_signs_in_to_none(self, reception: Reception) -> None:
        email, password = unique_email("admin"), strong_password()
        admin = await ensure_platform_admin(reception.pool, reception.passwords, email=email,
                                            password=password)
        opened = await password_sign_in(reception, caller(), email, password, None)
        assert (opened.membership, opened.session.org_id, opened.user.id) == (None, None,
                                                                              admin.id)

    async def test_a_wrong_password_and_an_unknown_email_are_refused_and_audited(
            self, reception: Reception, owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        with pytest.raises(SignInRefused) as wrong:
            await password_sign_in(reception, who, p.user.email, p.password + "x", None)
        with pytest.raises(SignInRefused) as unknown:
            await password_sign_in(reception, who, unique_email(), p.password, None)
        assert (wrong.value.reason, unknown.value.reason) == (Reason.BAD_PASSWORD,
                                                              Reason.UNKNOWN_EMAIL)
        assert [(e["actor_id"], e["details"]) for e in await entries(owner_conn, who)] == [
            (p.user.id, {"reason": "bad_password"}), (None, {"reason": "unknown_email"})]

    async def test_vet_refuses_before_anything_changes(self, reception: Reception,
                                                       owner_conn: Any) -> None:
        p, who = await person(reception), caller()
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 p.user.id)
        disabled = dataclasses.replace(p.user, disabled=True)
        via = {"via": "invitation"}
        with pytest.raises(SignInRefused):
            await vet(reception, who, Attempt(disabled, Via.INVITATION, refusal_details=via))
        [entry] = await entries(owner_conn, who)
        assert entry["details"] == {"via": "invitation", "reason": "user_disabled"}


def test_every_refusal_has_an_answer_and_hides_an_account_s_state() -> None:
    answers = {r: problem(SignInRefused(r)) for r in Reason}
    assert all(isinstance(a, ApiError) for a in answers.values())
    hidden = {r for r, a in answers.items() if a.code == "invalid_credentials"}
    assert hidden == {Reason.UNKNOWN_EMAIL, Reason.BAD_PASSWORD, Reason.USER_DISABLED,
                      Reason.CREDENTIALS_CHANGED}
    assert len({answers[r].detail for r in hidden}) == 1


class TestSecondFactor:
    async def test_a_user_with_a_factor_gets_the_challenge_returned_and_no_session(
            self, reception: Reception, owner_conn: Any) -> None:
        """A success, not a refusal: the way in returns the challenge (no exception
        leaves the sign-in), and nothing of a session exists yet."""
        p = await person(reception)
        await owner_conn.execute(
            "insert into mfa_totp (user_id, secret_sealed, confirmed_at) "
            "values ($1, 'sealed', now())", p.user.id)
        outcome = await sign_in(reception, caller(), p)
        assert isinstance(outcome, SecondFactorRequired)
        assert len(outcome.mfa_token) >= 32 and outcome.METHODS == ("totp", "recovery_code")
        assert await owner_conn.fetchval(
            "select count(*) from sessions where user_id = $1", p.user.id) == 0
