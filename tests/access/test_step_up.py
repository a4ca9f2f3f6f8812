"""Step-up: the dangerous writes ask someone with a second factor for a recent one
(`mfa_at` within ARCHOMATA_STEP_UP_MAX_AGE_SECONDS); POST /auth/step-up proves it again
on the session; someone without a factor is not asked; create_app refuses a dangerous
route that declares nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import jwt
import pytest
from aiohttp import web

from archomata.access.guards import policy_problems, require_org_admin, require_write
from archomata.access.step_up import step_up_exempt
from archomata.app import create_app
from archomata.config import Config
from tests.factories import Session, refresh_cookie_of, signed_up, unique_email
from tests.identity.test_auth import refresh
from tests.identity.test_mfa import VERIFY, challenge, code, enrol

MAX_AGE = 2


@pytest.fixture
async def short(aiohttp_client: Any, config: Config) -> Any:
    return await aiohttp_client(create_app(dataclasses.replace(
        config, step_up_max_age_seconds=MAX_AGE)))


async def _new_agent(client: Any, auth: dict[str, str]) -> Any:
    return await client.post("/api/v1/agents", json={"name": "T"}, headers=auth)


def _bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


async def _with_totp(client: Any, mail_sink: Any) -> tuple[Session, str, dict[str, Any], str]:
    """Someone enrolled and signed in with their second factor (a recovery code: the
    authenticator's next step is left for the step-up): their login body and cookie."""
    me = await signed_up(client, mail_sink)
    secret, recovery = await enrol(client, me)
    done = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                           "recovery_code": recovery[0]})
    assert done.status == 200
    return me, secret, await done.json(), refresh_cookie_of(done) or ""


async def test_a_recent_factor_passes_an_old_one_is_asked_again(short: Any,
                                                                 mail_sink: Any) -> None:
    _, secret, body, cookie = await _with_totp(short, mail_sink)
    assert (await _new_agent(short, _bearer(body))).status == 201
    await asyncio.sleep(MAX_AGE + 1)
    stale = await _new_agent(short, _bearer(body))
    assert stale.status == 403 and (await stale.json())["code"] == "step_up_required"
    # A refresh carries the old mfa_at on: still asked.
    renewed = await refresh(short, cookie)
    assert (await _new_agent(short, _bearer(await renewed.json()))).status == 403
    wrong = await short.post("/api/v1/auth/step-up", headers=_bearer(body),
                             json={"code": "000000"})
    assert wrong.status == 401 and (await wrong.json())["code"] == "invalid_mfa_code"
    stepped = await short.post("/api/v1/auth/step-up", headers={
        **_bearer(body), "Cookie": f"archomata_refresh={refresh_cookie_of(renewed)}",
        "Origin": "http://localhost:5173"}, json={"code": code(secret, 1)})
    assert stepped.status == 200, await stepped.text()
    fresh = await stepped.json()
    claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
    assert claims["mfa_at"] > jwt.decode(body["access_token"],
                                         options={"verify_signature": False})["mfa_at"]
    assert (await _new_agent(short, _bearer(fresh))).status == 201
    # The rotated cookie's next token keeps the fresh mfa_at.
    again = await refresh(short, refresh_cookie_of(stepped) or "")
    assert jwt.decode((await again.json())["access_token"],
                      options={"verify_signature": False})["mfa_at"] == claims["mfa_at"]


async def test_the_enrolling_session_is_asked_before_turning_the_factor_off(
        client: Any, mail_sink: Any) -> None:
    me = await signed_up(client, mail_sink)
    _, recovery = await enrol(client, me)  # this session never proved a factor
    refused = await client.delete("/api/v1/me/mfa/totp", headers=me.auth)
    assert refused.status == 403 and (await refused.json())["code"] == "step_up_required"
    regenerate = await client.post("/api/v1/me/mfa/recovery-codes", headers=me.auth)
    assert regenerate.status == 403
    stepped = await client.post("/api/v1/auth/step-up", headers=me.auth,
                                json={"recovery_code": recovery[0]})
    assert stepped.status == 200, await stepped.text()
    auth = _bearer(await stepped.json())
    renewed = await client.post("/api/v1/me/mfa/recovery-codes", headers=auth)
    assert renewed.status == 200
    new_codes = (await renewed.json())["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(recovery)
    old = await client.post(VERIFY, json={"mfa_token": await challenge(client, me),
                                          "recovery_code": recovery[1]})
    assert old.status == 401  # the old codes died
    assert (await client.delete("/api/v1/me/mfa/totp", headers=auth)).status == 204
    plain = await (await client.post("/api/v1/auth/login", json={
        "email": me.email, "password": me.password})).json()
    assert "access_token" in plain  # no second factor asked any more


async def test_someone_without_a_second_factor_is_not_asked(client: Any,
                                                            mail_sink: Any) -> None:
    me = await signed_up(client, mail_sink)
    assert (await _new_agent(client, me.auth)).status == 201
    invited = await client.post("/api/v1/org/invitations", headers=me.auth, json={
        "email": unique_email("invitee"), "org_role": "member"})
    assert invited.status == 201, await invited.text()


async def test_credentials_on_an_account_ask_for_it_a_plain_account_does_not(
        short: Any, mail_sink: Any) -> None:
    _, _, body, _ = await _with_totp(short, mail_sink)
    await asyncio.sleep(MAX_AGE + 1)
    plain = {"name": "A", "broker": "B", "server": "S", "login": 7001, "environment": "demo"}
    assert (await short.post("/api/v1/accounts", headers=_bearer(body),
                             json=plain)).status == 201
    with_credentials = await short.post("/api/v1/accounts", headers=_bearer(body), json={
        **plain, "login": 7002, "credentials": {"password": "broker-secret-1"}})
    assert with_credentials.status == 403
    assert (await with_credentials.json())["code"] == "step_up_required"


class TestDeclaration:
    def test_a_dangerous_write_that_declares_nothing_stops_the_start(
            self, config: Config) -> None:
        async def change(request: web.Request) -> web.Response:
            return web.Response()

        app = create_app(config)
        app.router.add_post("/api/v1/org/_test/danger", require_org_admin(require_write(change)))
        assert any("_test/danger: a dangerous write that declares no step-up" in p
                   for p in policy_problems(app))

    def test_an_exemption_names_its_reason(self, config: Config) -> None:
        async def change(request: web.Request) -> web.Response:
            return web.Response()

        app = create_app(config)
        app.router.add_post("/api/v1/org/_test/fine", require_org_admin(require_write(
            step_up_exempt("grants nothing")(change))))
        assert not any("_test/fine" in p for p in policy_problems(app))
