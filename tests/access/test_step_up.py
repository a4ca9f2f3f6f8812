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

from archomata.access.guards import (
    policy_problems,
    require_org_admin,
    require_permission,
    require_write,
)
from archomata.access.permissions import Permission
from archomata.access.step_up import declaration, step_up_custody, step_up_exempt, step_up_when
from archomata.app import create_app
from archomata.config import Config
from tests.factories import (
    Session,
    member_with_roles,
    refresh_cookie_of,
    signed_up,
    unique_email,
)
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
    # A recovery code spent at step-up is in the org's log as at sign-in, with what is left.
    spent = await client.get("/api/v1/audit-logs?action=mfa.recovery_code_used", headers=auth)
    assert [e["details"] for e in (await spent.json())["items"]] == [{"left": 9}]
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


async def test_a_replayed_cookie_at_step_up_ends_the_session_audited(
        client: Any, mail_sink: Any, owner_conn: Any) -> None:
    """The step-up rotates the cookie it is sent: an older one is a reuse there as on
    /auth/refresh (contract section 2): the family ends, the reuse is audited, and no token
    is minted for the session it ended."""
    me, secret, body, cookie = await _with_totp(client, mail_sink)
    first = refresh_cookie_of(await refresh(client, cookie))
    assert first is not None
    current = refresh_cookie_of(await refresh(client, first))
    assert current is not None
    stepped = await client.post("/api/v1/auth/step-up", headers={
        **_bearer(body), "Cookie": f"archomata_refresh={cookie}",
        "Origin": "http://localhost:5173"}, json={"code": code(secret, 1)})
    assert stepped.status == 401, await stepped.text()
    assert (await stepped.json())["code"] == "session_revoked"
    assert (await refresh(client, current)).status == 401
    assert await owner_conn.fetchval(
        "select count(*) from audit_log where actor_id = $1 and "
        "action = 'auth.refresh.reuse_detected' and details->>'via' = 'step_up'",
        me.user_id) == 1


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


async def test_removing_a_member_asks_for_a_recent_factor(
        client: Any, mail_sink: Any, owner_conn: Any) -> None:
    """A stale administrator token cannot remove the other administrators."""
    admin = await signed_up(client, mail_sink)
    other = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [])
    promoted = await client.patch(f"/api/v1/org/members/{other.user_id}", headers=admin.auth,
                                  json={"org_role": "administrator"})
    assert promoted.status == 200, await promoted.text()
    await enrol(client, admin)  # the enrolling session proved no factor on itself
    refused = await client.delete(f"/api/v1/org/members/{other.user_id}", headers=admin.auth)
    assert refused.status == 403 and (await refused.json())["code"] == "step_up_required"
    assert await owner_conn.fetchval(
        "select org_role from memberships where org_id = $1 and user_id = $2",
        admin.org_id, other.user_id) == "administrator"
    # The other administrator, with no factor, is not asked.
    assert (await client.delete(f"/api/v1/org/members/{admin.user_id}",
                                headers=other.auth)).status == 204


class TestMarkedRoutes:
    """The contract's marked routes, and any write that can change custody, must ask."""

    @property
    def change(self) -> Any:
        async def change(request: web.Request) -> web.Response:
            return web.Response()
        return change  # a new one each time: the declarations are set on the handler

    def test_the_app_declares_every_marked_route_as_required(self, config: Config) -> None:
        app = create_app(config)
        assert policy_problems(app) == []
        declared = {(r.method, r.resource.canonical): declaration(r.handler)
                    for r in app.router.routes() if r.resource is not None}
        assert declared[("DELETE", "/api/v1/org/members/{user_id}")] == "always"
        assert declared[("PATCH", "/api/v1/accounts/{account_id}")] == "custody"
        assert declared[("POST", "/api/v1/accounts")] == "custody"

    @pytest.mark.parametrize("declare", [step_up_exempt("it only renames"),
                                         step_up_when("it names credentials"),
                                         lambda handler: handler])
    def test_a_custody_write_that_does_not_ask_stops_the_start(
            self, config: Config, declare: Any) -> None:
        app = create_app(config)
        app.router.add_put("/api/v1/accounts/{account_id}/_test/credentials",
                           require_permission(Permission.ACCOUNTS_UPDATE)(
                               require_write(declare(self.change))))
        assert any("_test/credentials: " in p and "must ask" in p
                   for p in policy_problems(app))
        fine = create_app(config)
        fine.router.add_put("/api/v1/accounts/{account_id}/_test/credentials",
                            require_permission(Permission.ACCOUNTS_UPDATE)(
                                require_write(step_up_custody(self.change))))
        assert not any("_test/credentials" in p for p in policy_problems(fine))

    @pytest.mark.parametrize("method", ["DELETE", "POST", "PUT"])
    def test_an_exempt_write_under_the_members_stops_the_start(
            self, config: Config, method: str) -> None:
        app = create_app(config)
        app.router.add_route(method, "/api/v1/org/members/{user_id}/_test",
                             require_org_admin(require_write(
                                 step_up_exempt("takes access away")(self.change))))
        assert any("/api/v1/org/members/{user_id}/_test: declares exempt" in p
                   for p in policy_problems(app))
