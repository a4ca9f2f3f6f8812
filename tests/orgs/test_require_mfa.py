"""An org that requires a second factor: a member without one gets 403
`mfa_enrollment_required` on the org's routes, keeps /me, /me/mfa and /auth to enrol, and
gets in once enrolled; the change takes effect on every cached member at once."""

from __future__ import annotations

from typing import Any

from tests.factories import member_with_roles, refresh_cookie_of, signed_up
from tests.identity.test_auth import refresh
from tests.identity.test_mfa import VERIFY, challenge, code, enrol

PROBE = "/api/v1/accounts"  # accounts:read, which the Viewer role grants


async def _require(client: Any, admin: Any, on: bool) -> Any:
    return await client.patch("/api/v1/org", headers=admin.auth, json={"require_mfa": on})


async def test_members_without_a_factor_are_sent_to_enrol_and_get_in_once_they_have(
        client: Any, mail_sink: Any, owner_conn: Any) -> None:
    admin = await signed_up(client, mail_sink)
    assert admin.org_id is not None
    member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])
    assert (await client.get(PROBE, headers=member.auth)).status == 200  # now cached
    changed = await _require(client, admin, True)
    assert changed.status == 200, await changed.text()
    assert (await changed.json())["require_mfa"] is True
    for who in (member, admin):  # the administrator too, at once, cache or not
        refused = await client.get(PROBE, headers=who.auth)
        assert refused.status == 403, await refused.text()
        assert (await refused.json())["code"] == "mfa_enrollment_required"
    # What they need to enrol stays open.
    me = await client.get("/api/v1/me", headers=member.auth)
    assert me.status == 200 and (await me.json())["org"]["require_mfa"] is True
    assert (await client.get("/api/v1/me/mfa", headers=member.auth)).status == 200
    secret, _ = await enrol(client, member)
    # The session that enrolled never proved the factor, but the member now has one.
    assert (await client.get(PROBE, headers=member.auth)).status == 200
    done = await client.post(VERIFY, json={"mfa_token": await challenge(client, member),
                                           "code": code(secret, 1)})
    assert done.status == 200
    token = {"Authorization": f"Bearer {(await done.json())['access_token']}"}
    assert (await client.get(PROBE, headers=token)).status == 200


async def test_turning_the_factor_off_in_such_an_org_shuts_its_routes_again(
        client: Any, mail_sink: Any) -> None:
    admin = await signed_up(client, mail_sink)
    _, recovery = await enrol(client, admin)
    stepped = await client.post("/api/v1/auth/step-up", headers=admin.auth,
                                json={"recovery_code": recovery[0]})
    assert stepped.status == 200
    fresh = {"Authorization": f"Bearer {(await stepped.json())['access_token']}"}
    assert (await client.patch("/api/v1/org", headers=fresh,
                               json={"require_mfa": True})).status == 200
    assert (await client.get("/api/v1/org/members", headers=fresh)).status == 200
    assert (await client.delete("/api/v1/me/mfa/totp", headers=fresh)).status == 204
    renewed = await refresh(client, refresh_cookie_of(stepped) or admin.refresh or "")
    assert renewed.status == 200, await renewed.text()
    after = {"Authorization": f"Bearer {(await renewed.json())['access_token']}"}
    refused = await client.get("/api/v1/org/members", headers=after)
    assert refused.status == 403
    assert (await refused.json())["code"] == "mfa_enrollment_required"


async def test_requiring_it_asks_an_enrolled_administrator_for_a_recent_factor(
        client: Any, mail_sink: Any) -> None:
    admin = await signed_up(client, mail_sink)
    await enrol(client, admin)  # this session never proved it
    refused = await _require(client, admin, True)
    assert refused.status == 403 and (await refused.json())["code"] == "step_up_required"
    renamed = await client.patch("/api/v1/org", headers=admin.auth, json={"name": "Renamed"})
    assert renamed.status == 200  # a name alone asks nothing
    assert (await client.patch("/api/v1/org", headers=admin.auth, json={})).status == 422
