"""A password from the bundled list of breached passwords is refused wherever a password is
set (422 `password_breached`), offline; any other strong one is taken."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from archomata.identity import breached
from tests.factories import signed_up, strong_password, unique_email, wait_for_mail
from tests.orgs.test_invitations import ACCEPT, invite

# From the list, 12 characters or more: the only ones the length rule lets through.
BREACHED = "qwerty123456"
CAPITALISED = "Qwerty123456"


def test_the_bundled_list_holds_at_least_100000_breach_passwords() -> None:
    listed = breached.bundled()
    assert len(listed) >= 100_000
    assert listed[:3] == ["123456", "password", "12345678"]  # rank order: most common first
    assert BREACHED in listed


def test_a_listed_password_is_found_in_any_case_and_an_unlisted_one_is_not() -> None:
    assert breached.is_breached(BREACHED) and breached.is_breached(CAPITALISED)
    assert not breached.is_breached(strong_password())
    assert not breached.is_breached("123456")  # listed, but no password this short is set


async def _is_breached_refusal(response: Any, field: str) -> None:
    assert response.status == 422, await response.text()
    body = await response.json()
    assert body["code"] == "password_breached"
    assert field in body["errors"]
    assert BREACHED not in str(body).lower()  # never echoed


class TestEveryPlaceAPasswordIsSet:
    async def test_registration(self, client: Any) -> None:
        response = await client.post("/api/v1/auth/register", json={
            "email": unique_email(), "password": CAPITALISED, "name": "N", "org_name": "O"})
        await _is_breached_refusal(response, "password")

    async def test_change(self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/auth/password/change", headers=me.auth, json={
            "current_password": me.password, "new_password": BREACHED})
        await _is_breached_refusal(response, "new_password")
        kept = await client.post("/api/v1/auth/login", json={
            "email": me.email, "password": me.password})
        assert kept.status == 200  # nothing changed

    async def test_reset(self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        await client.post("/api/v1/auth/password-reset/request", json={"email": me.email})
        token = await wait_for_mail(mail_sink, me.email, "reset")
        refused = await client.post("/api/v1/auth/password-reset/confirm",
                                    json={"token": token, "new_password": BREACHED})
        await _is_breached_refusal(refused, "new_password")
        done = await client.post("/api/v1/auth/password-reset/confirm",
                                 json={"token": token, "new_password": strong_password()})
        assert done.status == 204  # the link was not spent by the refusal

    async def test_invitation_accepted_by_a_new_account(self, client: Any,
                                                        mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, token = await invite(client, mail_sink, admin)
        refused = await client.post(ACCEPT, json={"token": token, "name": "Invitee",
                                                  "password": BREACHED})
        await _is_breached_refusal(refused, "password")
        accepted = await client.post(ACCEPT, json={"token": token, "name": "Invitee",
                                                   "password": strong_password()})
        assert accepted.status == 200, await accepted.text()


@pytest.mark.parametrize(("password", "refused"), [(BREACHED, True), ("x" * 4 + "y" * 9,
                                                                      False)])
def test_create_admin_refuses_a_breached_password(environ: dict[str, str], password: str,
                                                  refused: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "archomata", "create-admin", "--email", unique_email("adm")],
        env={**os.environ, **environ, "ARCHOMATA_ADMIN_PASSWORD": password},
        capture_output=True, text=True, check=False, timeout=60)
    assert (result.returncode == 2) is refused, result.stderr
    assert ("breached" in result.stderr) is refused
