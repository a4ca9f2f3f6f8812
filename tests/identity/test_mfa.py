"""The second factor end to end, with codes computed from the secret as an authenticator
app would: enrolment confirmed by a first code, every way in answering with a challenge
instead of a session, the challenge answered by a TOTP code or a recovery code, and each
bypass refused (no factor, a replayed code, a reused or exhausted `mfa_token`, another
user's code)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any
from uuid import UUID

import jwt
import pyotp

from archomata.app import create_app
from tests.factories import (
    Session,
    login,
    refresh_cookie_of,
    signed_up,
)
from tests.identity.test_auth import audit_actions, refresh
from tests.orgs.test_invitations import ACCEPT, invite
from tests.secret_scan import remember

VERIFY = "/api/v1/auth/mfa/verify"


def code(secret: str, steps_ahead: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


async def enrol(client: Any, me: Session) -> tuple[str, list[str]]:
    """TOTP enrolled and confirmed for `me` (its first code is the current step's)."""
    started = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                json={"current_password": me.password})
    assert started.status == 200, await started.text()
    body = await started.json()
    secret = body["secret"]
    remember(secret)
    assert f"secret={secret}" in body["otpauth_uri"]
    confirmed = await client.post("/api/v1/me/mfa/totp/confirm", headers=me.auth,
                                  json={"code": code(secret)})
    assert confirmed.status == 200, await confirmed.text()
    recovery = (await confirmed.json())["recovery_codes"]
    remember(*recovery)
    return secret, recovery


async def challenge(client: Any, me: Session) -> str:
    """A password login of someone with a second factor: a challenge, no session."""
    response = await client.post("/api/v1/auth/login",
                                 json={"email": me.email, "password": me.password})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["mfa_required"] is True and body["methods"] == ["totp", "recovery_code"]
    assert "access_token" not in body and refresh_cookie_of(response) is None
    token: str = body["mfa_token"]
    remember(token)
    return token


async def accept_with_password(client: Any, token: str, me: Session) -> str:
    """An invitation accepted by `me`, who has a second factor: the challenge's token."""
    accepted = await client.post(ACCEPT, json={"token": token, "password": me.password})
    assert accepted.status == 200, await accepted.text()
    body = await accepted.json()
    assert body["mfa_required"] is True and refresh_cookie_of(accepted) is None
    mfa_token: str = body["mfa_token"]
    remember(mfa_token)
    return mfa_token


async def joined(owner_conn: Any, invitation_id: str, admin: Session,
                 invitee: Session) -> tuple[str | None, UUID | None, int]:
    """The invitee's role in the admin's org, who the invitation was accepted by, and how
    many `member.joined` entries it has."""
    role = await owner_conn.fetchval(
        "select org_role from memberships where org_id = $1 and user_id = $2",
        admin.org_id, invitee.user_id)
    accepted_by = await owner_conn.fetchval(
        "select accepted_by from invitations where id = $1", UUID(invitation_id))
    entries = await owner_conn.fetchval(
        "select count(*) from audit_log where action = 'member.joined' "
        "and details->>'invitation_id' = $1", invitation_id)
    return role, accepted_by, entries


def claims(body: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(body["access_token"],
                                         options={"verify_signature": False})
    return decoded


class TestEnrolment:
    async def test_nothing_is_asked_before_the_first_code_confirms_it(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        started = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                    json={"current_password": me.password})
        assert started.status == 200
        assert "access_token" in await (await client.post("/api/v1/auth/login", json={
            "email": me.email, "password": me.password})).json()
        status = await (await client.get("/api/v1/me/mfa", headers=me.auth)).json()
        assert status == {"totp": {"enabled": False, "confirmed_at": None},
                          "recovery_codes_left": 0}

    async def test_the_password_is_asked_and_a_wrong_first_code_confirms_nothing(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        wrong = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                  json={"current_password": "not-the-password-at-all"})
        assert wrong.status == 401
        started = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                    json={"current_password": me.password})
        secret = (await started.json())["secret"]
        other = pyotp.random_base32()
        refused = await client.post("/api/v1/me/mfa/totp/confirm", headers=me.auth,
                                    json={"code": code(other)})
        assert refused.status == 401
        assert (await refused.json())["code"] == "invalid_mfa_code"
        assert (await (await client.get("/api/v1/me/mfa", headers=me.auth)).json()
                )["totp"]["enabled"] is False
        confirmed = await client.post("/api/v1/me/mfa/totp/confirm", headers=me.auth,
                                      json={"code": code(secret)})
        assert confirmed.status == 200

    async def test_confirming_ends_the_other_sessions_and_shows_ten_codes_once(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        other = await login(client, me.email, me.password)
        _, recovery = await enrol(client, me)
        assert len(set(recovery)) == 10
        assert (await client.get("/api/v1/me", headers=other.auth)).status == 401
        assert (await refresh(client, other.refresh or "")).status == 401
        mine = await client.get("/api/v1/me", headers=me.auth)
        assert mine.status == 200 and (await mine.json())["user"]["mfa_enabled"] is True
        status = await (await client.get("/api/v1/me/mfa", headers=me.auth)).json()
        assert status["totp"]["enabled"] is True and status["recovery_codes_left"] == 10
        again = await client.post("/api/v1/me/mfa/totp", headers=me.auth,
                                  json={"current_password": me.password})
        assert again.status == 409
        stored = await owner_conn.fetchrow("select * from mfa_totp where user_id = $1",
                                           me.user_id)
        assert stored["confirmed_at"] is not None
        hashes = [r["code_hash"] for r in await owner_conn.fetch(
            "select code_hash from mfa_recovery_codes where user_id = $1", me.user_id)]
        assert len(hashes) == 10 and not set(recovery) & set(hashes)
        assert "mfa.enabled" in await audit_actions(owner_conn, actor_id=me.user_id)


class TestSigningIn:
    async def test_a_totp_code_completes_the_sign_in_once(self, client: Any,
                                                          mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        token = await challenge(client, me)
        wrong = await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
        assert wrong.status == 401 and (await wrong.json())["code"] == "invalid_mfa_code"
        the_code = code(secret, 1)  # the confirmation took the current step
        done = await client.post(VERIFY, json={"mfa_token": token, "code": the_code})
        assert done.status == 200, await done.text()
        body = await done.json()
        assert set(claims(body)["amr"]) == {"pwd", "otp"}
        assert abs(claims(body)["mfa_at"] - time.time()) < 60
        cookie = refresh_cookie_of(done)
        assert cookie is not None
        # The token is spent; the code too, on a new challenge.
        spent = await client.post(VERIFY, json={"mfa_token": token, "code": the_code})
        assert spent.status == 400 and (await spent.json())["code"] == "invalid_token"
        replay = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                                 "code": the_code})
        assert replay.status == 401
        # A refresh keeps how the session was proven, and never renews mfa_at.
        renewed = await refresh(client, cookie)
        assert renewed.status == 200
        assert claims(await renewed.json())["mfa_at"] == claims(body)["mfa_at"]

    async def test_a_recovery_code_serves_once(self, client: Any, mail_sink: Any,
                                               owner_conn: Any) -> None:
        me = await signed_up(client, mail_sink)
        _, recovery = await enrol(client, me)
        done = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                               "recovery_code": recovery[3].upper()})
        assert done.status == 200, await done.text()
        assert "recovery_code" in claims(await done.json())["amr"]
        again = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                                "recovery_code": recovery[3]})
        assert again.status == 401
        left = await (await client.get("/api/v1/me/mfa", headers=me.auth)).json()
        assert left["recovery_codes_left"] == 9
        actions = await audit_actions(owner_conn, actor_id=me.user_id)
        assert "mfa.recovery_code_used" in actions and "mfa.challenge_failed" in actions

    async def test_five_wrong_codes_end_the_challenge(self, client: Any,
                                                      mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        token = await challenge(client, me)
        for _ in range(5):
            assert (await client.post(VERIFY, json={"mfa_token": token,
                                                    "code": "123456"})).status == 401
        ended = await client.post(VERIFY, json={"mfa_token": token, "code": code(secret, 1)})
        assert ended.status == 400 and (await ended.json())["code"] == "invalid_token"

    async def test_another_users_code_opens_nothing(self, client: Any,
                                                    mail_sink: Any) -> None:
        mine, theirs = await signed_up(client, mail_sink), await signed_up(client, mail_sink)
        await enrol(client, mine)
        their_secret, their_recovery = await enrol(client, theirs)
        token = await challenge(client, mine)
        for answer in ({"code": code(their_secret, 1)}, {"recovery_code": their_recovery[0]}):
            refused = await client.post(VERIFY, json={"mfa_token": token, **answer})
            assert refused.status == 401

    async def test_a_made_up_token_and_both_answers_at_once_are_refused(
            self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, recovery = await enrol(client, me)
        unknown = await client.post(VERIFY, json={"mfa_token": "x" * 43,
                                                  "code": code(secret, 1)})
        assert unknown.status == 400
        both = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                               "code": code(secret, 1),
                                               "recovery_code": recovery[0]})
        assert both.status == 422

    async def test_an_invitation_accepted_by_an_enrolled_user_asks_for_the_code(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        invitee = await signed_up(client, mail_sink, org_name="Elsewhere")
        secret, _ = await enrol(client, invitee)
        _, token = await invite(client, mail_sink, admin, email=invitee.email)
        accepted = await client.post(ACCEPT, json={"token": token,
                                                   "password": invitee.password})
        assert accepted.status == 200, await accepted.text()
        body = await accepted.json()
        assert body["mfa_required"] is True and "access_token" not in body
        assert refresh_cookie_of(accepted) is None
        done = await client.post(VERIFY, json={"mfa_token": body["mfa_token"],
                                               "code": code(secret, 1)})
        assert done.status == 200, await done.text()
        assert (await done.json())["org"]["id"] == str(admin.org_id)

    async def test_an_abandoned_challenge_leaves_the_invitation_usable(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        invitee = await signed_up(client, mail_sink, org_name="Elsewhere")
        secret, recovery = await enrol(client, invitee)
        invitation, token = await invite(client, mail_sink, admin, email=invitee.email)
        abandoned = await accept_with_password(client, token, invitee)
        assert await joined(owner_conn, invitation["id"], admin, invitee) == (None, None, 0)
        # The same link, later: still pending, and the code makes the joining.
        again = await accept_with_password(client, token, invitee)
        done = await client.post(VERIFY, json={"mfa_token": again, "code": code(secret, 1)})
        assert done.status == 200, await done.text()
        assert (await done.json())["org"]["id"] == str(admin.org_id)
        assert await joined(owner_conn, invitation["id"], admin, invitee) == (
            "member", invitee.user_id, 1)
        # The abandoned challenge, answered late, joins nothing twice.
        late = await client.post(VERIFY, json={"mfa_token": abandoned,
                                               "recovery_code": recovery[0]})
        assert late.status == 400 and (await late.json())["code"] == "invalid_token"
        assert await joined(owner_conn, invitation["id"], admin, invitee) == (
            "member", invitee.user_id, 1)

    async def test_an_invitation_revoked_before_the_code_joins_nothing(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        invitee = await signed_up(client, mail_sink, org_name="Elsewhere")
        secret, recovery = await enrol(client, invitee)
        invitation, token = await invite(client, mail_sink, admin, email=invitee.email)
        mfa_token = await accept_with_password(client, token, invitee)
        revoked = await client.delete(f"/api/v1/org/invitations/{invitation['id']}",
                                      headers=admin.auth)
        assert revoked.status == 204
        answer = await client.post(VERIFY, json={"mfa_token": mfa_token,
                                                 "code": code(secret, 1)})
        assert answer.status == 400 and (await answer.json())["code"] == "invalid_token"
        assert await joined(owner_conn, invitation["id"], admin, invitee) == (None, None, 0)
        # The challenge ended with it; the code rolled back with the joining, unspent.
        ended = await client.post(VERIFY, json={"mfa_token": mfa_token,
                                                "recovery_code": recovery[0]})
        assert ended.status == 400
        unspent = await client.post(VERIFY, json={"mfa_token": await challenge(client, invitee),
                                                  "code": code(secret, 1)})
        assert unspent.status == 200, await unspent.text()
        assert (await unspent.json())["org"]["id"] == str(invitee.org_id)

    async def test_a_user_disabled_before_the_code_joins_nothing(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        invitee = await signed_up(client, mail_sink, org_name="Elsewhere")
        secret, _ = await enrol(client, invitee)
        invitation, token = await invite(client, mail_sink, admin, email=invitee.email)
        mfa_token = await accept_with_password(client, token, invitee)
        await owner_conn.execute("update users set disabled_at = now() where id = $1",
                                 invitee.user_id)
        answer = await client.post(VERIFY, json={"mfa_token": mfa_token,
                                                 "code": code(secret, 1)})
        assert answer.status == 401, await answer.text()  # the sign-in refuses, as at login
        assert await joined(owner_conn, invitation["id"], admin, invitee) == (None, None, 0)

    async def test_without_a_second_factor_nothing_changes(self, client: Any,
                                                           mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        body = me.body
        assert "access_token" in body and claims(body)["amr"] == ["pwd"]
        assert "mfa_at" not in claims(body)


async def test_wrong_codes_count_against_the_accounts_login_backoff(
        aiohttp_client: Any, config: Any, mail_sink: Any) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(
        config, login_backoff_after=3)))
    me = await signed_up(client, mail_sink)
    secret, _ = await enrol(client, me)
    token = await challenge(client, me)
    statuses = [(await client.post(VERIFY, json={"mfa_token": token, "code": "999999"})
                 ).status for _ in range(5)]
    # Three free, the fourth imposes a wait: the fifth is not even checked.
    assert statuses == [401, 401, 401, 401, 429]
    # Backing off, even the right code waits (and the password too: the same account).
    held = await client.post(VERIFY, json={"mfa_token": token, "code": code(secret, 1)})
    assert held.status == 429 and "Retry-After" in held.headers
    password = await client.post("/api/v1/auth/login",
                                 json={"email": me.email, "password": me.password})
    assert password.status == 429
