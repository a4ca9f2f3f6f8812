"""Password login, the SSO callback and invitation acceptance all go through the one
sign-in: a rule put in it refuses all three ways in, each in its own shape,
and is audited alike. Real servers, a real OpenID provider (see tests/identity/test_sso.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from archomata.identity import signin as service
from archomata.identity.signin import Attempt, Reason
from archomata.identity.store.users import User
from tests.factories import register, signed_up
from tests.identity.test_sso import World, entries, google_user, mark, refused
from tests.orgs.test_invitations import ACCEPT, invite, membership


@dataclass
class WaysIn:
    """One person per way in, each able to come in that way."""

    email: str  # by password
    password: str
    invitee: str  # existing account, by invitation
    invitee_password: str
    token: str
    org_id: UUID | None  # the org invited to
    sso_user: UUID

    async def login(self, client: Any) -> Any:
        return await client.post("/api/v1/auth/login",
                                 json={"email": self.email, "password": self.password})

    async def accept(self, client: Any) -> Any:
        return await client.post(ACCEPT, json={"token": self.token,
                                               "password": self.invitee_password})


async def ways_in(client: Any, mail_sink: Any, world: World) -> tuple[WaysIn, list[UUID]]:
    admin = await signed_up(client, mail_sink)
    email, password, by_password = await register(client, mail_sink)
    invitee, invitee_password, invited = await register(client, mail_sink)
    _, token = await invite(client, mail_sink, admin, email=invitee)
    world.google.user = google_user()
    _, browser = await world.sign_in()
    sso_user = UUID((await world.refresh(browser))["user"]["id"])
    ways = WaysIn(email, password, invitee, invitee_password, token, admin.org_id, sso_user)
    return ways, [UUID(by_password["id"]), UUID(invited["id"]), sso_user]


async def refused_everywhere(client: Any, world: World, owner_conn: Any, ways: WaysIn,
                             people: list[UUID], since: Any) -> None:
    login, accept = await ways.login(client), await ways.accept(client)
    assert (login.status, (await login.json())["code"]) == (401, "invalid_credentials")
    assert (accept.status, (await accept.json())["code"]) == (401, "invalid_credentials")
    assert await membership(owner_conn, ways.org_id, ways.invitee) is None  # vetted first
    visit, browser = await world.sign_in()
    refused(visit, "user_disabled")
    assert browser.cookie("archomata_refresh") is None
    failed = await entries(owner_conn, since, "auth.login.failed")
    assert sorted((r["actor_id"], r["details"]["reason"]) for r in failed) == sorted(
        (p, "user_disabled") for p in people)
    assert {r["actor_id"]: r["details"] for r in failed}[ways.sso_user] == {
        "method": "sso", "provider": "google", "reason": "user_disabled"}
    assert {r["actor_id"]: r["details"] for r in failed}[people[1]] == {
        "via": "invitation", "reason": "user_disabled"}
    assert await entries(owner_conn, since, "auth.login.succeeded") == []
    assert await entries(owner_conn, since, "auth.sso.login") == []


class TestOneDoor:
    async def test_a_rule_added_in_the_door_refuses_every_way_in(
            self, client: Any, mail_sink: Any, world: World, owner_conn: Any,
            monkeypatch: pytest.MonkeyPatch) -> None:
        ways, people = await ways_in(client, mail_sink, world)
        rule = service.refusal_of

        def with_a_new_rule(user: User, attempt: Attempt) -> Reason | None:
            return Reason.USER_DISABLED if user.id in people else rule(user, attempt)

        monkeypatch.setattr(service, "refusal_of", with_a_new_rule)
        await refused_everywhere(client, world, owner_conn, ways, people,
                                 await mark(owner_conn))
        monkeypatch.undo()  # and without the rule, each way lets its person in
        assert (await ways.login(client)).status == 200
        accepted = await ways.accept(client)
        assert accepted.status == 200, await accepted.text()
        assert await membership(owner_conn, ways.org_id, ways.invitee) == "member"
        visit, _ = await world.sign_in()
        assert visit.url.endswith("/dashboard"), visit

    async def test_a_disabled_user_is_refused_by_every_way_in_alike(
            self, client: Any, mail_sink: Any, world: World, owner_conn: Any) -> None:
        ways, people = await ways_in(client, mail_sink, world)
        await owner_conn.execute("update users set disabled_at = now() where id = any($1)",
                                 people)
        await refused_everywhere(client, world, owner_conn, ways, people,
                                 await mark(owner_conn))
