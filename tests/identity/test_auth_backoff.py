"""The login backoff keys on the account, not on how its email is spelled, and every
password check counts against it (login, password change, invitation acceptance)."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from archomata.identity.signin import throttle_subject
from archomata.identity.store.users import normalize_email
from tests.factories import login, register, wait_for_mail

LOGIN = "/api/v1/auth/login"
CHANGE = "/api/v1/auth/password/change"


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def spellings(local: str) -> list[str]:
    """Other ways to type `strasse-<local>@example.test` that the lookup finds."""
    return [f"STRASSE-{local.upper()}@EXAMPLE.TEST", f"straße-{local}@example.test",
            fullwidth(f"strasse-{local}@example.test"),
            f" Straße-{local}@{fullwidth('E')}xample.test "]


@pytest.fixture
async def strict(aiohttp_client: Any, config: Config) -> Any:
    """Two free failures; the third locks the account far longer than any test runs."""
    return await aiohttp_client(create_app(dataclasses.replace(
        config, login_backoff_after=2, login_backoff_max_seconds=600)))


async def attempt(client: Any, email: str, password: str) -> int:
    response = await client.post(LOGIN, json={"email": email, "password": password})
    return response.status


def test_every_spelling_names_one_subject() -> None:
    local = "abc"
    names = {throttle_subject(None, s) for s in [f"strasse-{local}@example.test",
                                                  *spellings(local)]}
    assert names == {f"email:{normalize_email('strasse-abc@example.test')}"}


class TestBackoffKeysOnTheAccount:
    async def test_a_locked_account_is_not_reached_by_another_spelling(
            self, strict: Any, mail_sink: Any) -> None:
        local = secrets.token_hex(4)
        email = f"strasse-{local}@example.test"
        _, password, _ = await register(strict, mail_sink, email=email)
        for spelling in spellings(local):
            assert await attempt(strict, spelling, password) == 200  # the lookup finds it
        assert [await attempt(strict, email, "wrong-password-1") for _ in range(3)] == \
            [401, 401, 401]
        assert await attempt(strict, email, password) == 429
        for spelling in spellings(local):
            assert await attempt(strict, spelling, password) == 429, spelling

    async def test_failures_under_every_spelling_add_up(
            self, strict: Any, mail_sink: Any) -> None:
        local = secrets.token_hex(4)
        email = f"strasse-{local}@example.test"
        _, password, _ = await register(strict, mail_sink, email=email)
        ways = spellings(local)
        assert [await attempt(strict, ways[n], "wrong-password-1") for n in (1, 2, 3)] == \
            [401, 401, 401]
        assert await attempt(strict, email, password) == 429

    async def test_an_unknown_email_backs_off_under_every_spelling_too(
            self, strict: Any) -> None:
        local = secrets.token_hex(4)
        ways = spellings(local)
        assert [await attempt(strict, ways[n], "wrong-password-1") for n in (0, 1, 2)] == \
            [401, 401, 401]
        assert await attempt(strict, ways[3], "wrong-password-1") == 429


class TestPasswordChangeCounts:
    async def test_wrong_current_passwords_lock_the_login_and_are_refused_while_locked(
            self, strict: Any, mail_sink: Any) -> None:
        email, password, _ = await register(strict, mail_sink)
        me = await login(strict, email, password)
        answers = []
        for _ in range(4):
            response = await strict.post(CHANGE, headers=me.auth, json={
                "current_password": "wrong-password-1", "new_password": "new-password-123456"})
            answers.append((response.status, (await response.json())["code"]))
        assert answers == [(422, "invalid_current_password")] * 3 + [(429, "rate_limited")]
        assert await attempt(strict, email, password) == 429
        right = await strict.post(CHANGE, headers=me.auth, json={
            "current_password": password, "new_password": "new-password-123456"})
        assert right.status == 429  # no guessing through the backoff either
        assert int(right.headers["Retry-After"]) >= 1


class TestInvitationCounts:
    async def test_an_invitation_token_is_no_way_around_the_backoff(
            self, strict: Any, mail_sink: Any) -> None:
        admin_email, admin_password, _ = await register(strict, mail_sink)
        admin = await login(strict, admin_email, admin_password)
        email, password, _ = await register(strict, mail_sink)
        invited = await strict.post("/api/v1/org/invitations", headers=admin.auth,
                                    json={"email": email})
        assert invited.status == 201, await invited.text()
        token = await wait_for_mail(mail_sink, email, "invited")
        guesses = []
        for _ in range(4):
            response = await strict.post("/api/v1/auth/accept-invitation", json={
                "token": token, "password": "wrong-password-1"})
            guesses.append(response.status)
        assert guesses == [401, 401, 401, 429]
        assert await attempt(strict, email, password) == 429
        accepted = await strict.post("/api/v1/auth/accept-invitation",
                                     json={"token": token, "password": password})
        assert accepted.status == 429


class TestMailLinksPerAccount:
    @pytest.mark.parametrize(("path", "action", "verified"), [
        ("/api/v1/auth/password-reset/request", "auth.password_reset.requested", True),
        ("/api/v1/auth/resend-verification", "auth.email.verification_sent", False)])
    async def test_one_link_a_minute_per_account_whatever_the_spelling(
            self, client: Any, mail_sink: Any, owner_conn: Any, path: str, action: str,
            verified: bool) -> None:
        local = secrets.token_hex(4)
        email = f"strasse-{local}@example.test"
        _, _, user = await register(client, mail_sink, email=email, verify=verified)
        _, _, bystander = await register(client, mail_sink, verify=verified)
        for spelling in [email, *spellings(local)]:
            response = await client.post(path, json={"email": spelling})
            assert response.status == 202
        assert (await client.post(path, json={"email": bystander["email"]})).status == 202
        await client.app[keys.LATER].drain(10)  # the links are issued after the answers
        counts = {row["resource_id"]: row["n"] for row in await owner_conn.fetch(
            "select resource_id, count(*) as n from audit_log where action = $1 "
            "and resource_id = any($2::text[]) group by resource_id",
            action, [user["id"], bystander["id"]])}
        assert {str(k): v for k, v in counts.items()} == {user["id"]: 1, bystander["id"]: 1}
        await wait_for_mail(mail_sink, email, "reset" if verified else "verify")
