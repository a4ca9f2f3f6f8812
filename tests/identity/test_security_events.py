"""A member's security events are in their org's log, where its administrator reads them
(GET /audit-logs, filtered by action): a wrong second-factor answer and a spent recovery
code in the org the sign-in is opening (step-up and confirmation: the caller's org), a
reset asked for or completed in the org a sign-in of the account opens by default;
someone in no org stays in the platform's log."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from archomata import keys
from tests.factories import (
    Session,
    login,
    member_with_roles,
    platform_admin,
    signed_up,
    strong_password,
    wait_for_mail,
)
from tests.identity.test_mfa import VERIFY, challenge, enrol
from tests.orgs.test_invitations import accept_as_new, invite

RESET = "/api/v1/auth/password-reset/request"


async def seen_by(client: Any, admin: Session, action: str, user_id: UUID) -> list[Any]:
    """The entries about `user_id` the org administrator finds by filtering on `action`."""
    response = await client.get("/api/v1/audit-logs", headers=admin.auth,
                                params={"action": action, "resource_id": str(user_id)})
    assert response.status == 200, await response.text()
    return list((await response.json())["items"])


async def orgs_of(owner_conn: Any, action: str, user_id: UUID) -> list[UUID | None]:
    rows = await owner_conn.fetch("select org_id from audit_log where action = $1 "
                                  "and resource_id = $2 order by occurred_at",
                                  action, str(user_id))
    return [r["org_id"] for r in rows]


class TestSecondFactorEvents:
    async def test_in_the_org_the_sign_in_is_opening(self, client: Any, mail_sink: Any,
                                                     owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [])
        _, recovery = await enrol(client, member)
        token = await challenge(client, member)  # no org asked: their own org opens
        assert (await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
                ).status == 401
        assert await seen_by(client, admin, "mfa.challenge_failed", member.user_id) == []
        opening = await client.post("/api/v1/auth/login", json={
            "email": member.email, "password": member.password, "org_id": str(admin.org_id)})
        token = (await opening.json())["mfa_token"]
        assert (await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
                ).status == 401
        done = await client.post(VERIFY, json={"mfa_token": token,
                                               "recovery_code": recovery[0]})
        assert done.status == 200, await done.text()
        failed = await seen_by(client, admin, "mfa.challenge_failed", member.user_id)
        assert [e["org_id"] for e in failed] == [str(admin.org_id)]
        assert failed[0]["actor_id"] == str(member.user_id)
        assert failed[0]["details"]["method"] == "totp"
        used = await seen_by(client, admin, "mfa.recovery_code_used", member.user_id)
        assert len(used) == 1 and used[0]["details"]["left"] == 9
        own = await orgs_of(owner_conn, "mfa.challenge_failed", member.user_id)
        assert own[0] not in (None, admin.org_id) and own[1] == admin.org_id

    async def test_step_up_in_the_callers_org(self, client: Any, mail_sink: Any,
                                              owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [])
        await enrol(client, member)
        wrong = await client.post("/api/v1/auth/step-up", json={"code": "000000"},
                                  headers=member.auth)
        assert wrong.status == 401
        failed = await seen_by(client, admin, "mfa.challenge_failed", member.user_id)
        assert [e["details"] for e in failed] == [{"via": "step_up"}]

    async def test_someone_in_no_org_stays_in_the_platform_log(
            self, client: Any, config: Any, mail_sink: Any, owner_conn: Any) -> None:
        operator = await platform_admin(client, config)
        await enrol(client, operator)
        token = await challenge(client, operator)
        assert (await client.post(VERIFY, json={"mfa_token": token, "code": "000000"})
                ).status == 401
        assert await orgs_of(owner_conn, "mfa.challenge_failed", operator.user_id) == [None]


class TestResetEvents:
    async def test_a_reset_is_in_the_members_org(self, client: Any, mail_sink: Any,
                                                 owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, token = await invite(client, mail_sink, admin)
        joined = await accept_as_new(client, token)
        assert joined.status == 200, await joined.text()
        member = await joined.json()
        user_id = UUID(member["user"]["id"])
        assert (await client.post(RESET, json={"email": member["user"]["email"]})
                ).status == 202
        await client.app[keys.LATER].drain(10)  # the link is issued after the answer
        asked = await seen_by(client, admin, "auth.password_reset.requested", user_id)
        assert len(asked) == 1 and asked[0]["org_id"] == str(admin.org_id)
        link = await wait_for_mail(mail_sink, member["user"]["email"], "reset")
        reset = await client.post("/api/v1/auth/password-reset/confirm", json={
            "token": link, "new_password": strong_password()})
        assert reset.status == 204, await reset.text()
        assert len(await seen_by(client, admin, "auth.password_reset.completed",
                                 user_id)) == 1

    async def test_the_first_org_of_many_and_none_for_no_org(
            self, client: Any, config: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, [])
        assert (await client.post(RESET, json={"email": member.email})).status == 202
        await client.app[keys.LATER].drain(10)  # the link is issued after the answer
        home = await login(client, member.email, member.password)  # no org asked
        assert await orgs_of(owner_conn, "auth.password_reset.requested",
                             member.user_id) == [home.org_id]
        assert home.org_id != admin.org_id
        operator = await platform_admin(client, config)
        assert (await client.post(RESET, json={"email": operator.email})).status == 202
        await client.app[keys.LATER].drain(10)
        assert await orgs_of(owner_conn, "auth.password_reset.requested",
                             operator.user_id) == [None]
