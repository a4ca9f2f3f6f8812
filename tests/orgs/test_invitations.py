"""Invitations: listed and revoked by administrators, and dying with their inviter's
authority (removal, demotion, a disabled account), re-checked when accepted."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from uuid import UUID

from archomata.audit.chain import verify
from archomata.audit.keyed import current_key
from archomata.config import Config
from tests.factories import (
    Session,
    login,
    member_with_roles,
    platform_admin,
    register,
    signed_up,
    strong_password,
    token_from_mail,
    unique_email,
)

INVITATIONS = "/api/v1/org/invitations"
ACCEPT = "/api/v1/auth/accept-invitation"
LISTED_FIELDS = {"id", "org_id", "email", "org_role", "role_ids", "group_ids", "invited_by",
                 "created_at", "expires_at"}


async def invite(client: Any, mail_sink: Any, admin: Session, email: str | None = None,
                 org_role: str = "member") -> tuple[dict[str, Any], str]:
    """A new invitation by `admin` and the token its mail carries."""
    email = email or unique_email("invitee")
    sent = len(mail_sink.to(email))
    response = await client.post(INVITATIONS, headers=admin.auth,
                                 json={"email": email, "org_role": org_role})
    assert response.status == 201, await response.text()
    for _ in range(100):
        if len(mail_sink.to(email)) > sent:
            break
        await asyncio.sleep(0.02)
    return await response.json(), token_from_mail(mail_sink, email, "invited")


async def accept_as_new(client: Any, token: str) -> Any:
    return await client.post(ACCEPT, json={"token": token, "name": "Invitee",
                                           "password": strong_password()})


async def second_admin(client: Any, mail_sink: Any, owner_conn: Any,
                       owner: Session) -> Session:
    assert owner.org_id is not None
    return await member_with_roles(client, mail_sink, owner_conn, owner.org_id,
                                   ["Administrator"], org_role="administrator")


async def listed(client: Any, admin: Session, query: str = "") -> dict[str, Any]:
    response = await client.get(f"{INVITATIONS}{query}", headers=admin.auth)
    assert response.status == 200, await response.text()
    return await response.json()


async def revocations(owner_conn: Any, invitation_id: str) -> list[dict[str, Any]]:
    found = await owner_conn.fetch(
        "select actor_type, actor_id, details, request_id from audit_log "
        "where action = 'member.invitation_revoked' and resource_id = $1", invitation_id)
    return [{**r, "details": json.loads(r["details"])} for r in found]


async def membership(owner_conn: Any, org_id: UUID | None, email: str) -> str | None:
    return await owner_conn.fetchval(
        "select m.org_role from memberships m join users u on u.id = m.user_id "
        "where m.org_id = $1 and u.email = $2", org_id, email)


class TestListing:
    async def test_lists_pending_ones_only_not_accepted_expired_or_revoked(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, accepted_token = await invite(client, mail_sink, admin)
        expired, _ = await invite(client, mail_sink, admin)
        revoked, _ = await invite(client, mail_sink, admin)
        pending, _ = await invite(client, mail_sink, admin, org_role="administrator")
        assert (await accept_as_new(client, accepted_token)).status == 200
        await owner_conn.execute("update invitations set expires_at = now() - interval '1 s' "
                                 "where id = $1", UUID(expired["id"]))
        gone = await client.delete(f"{INVITATIONS}/{revoked['id']}", headers=admin.auth)
        assert gone.status == 204
        body = await listed(client, admin)
        assert [i["id"] for i in body["items"]] == [pending["id"]]
        assert body["next_cursor"] is None
        item = body["items"][0]
        assert set(item) == LISTED_FIELDS
        assert item["invited_by"] == str(admin.user_id)
        assert (item["email"], item["org_role"]) == (pending["email"], "administrator")
        assert (item["role_ids"], item["group_ids"]) == ([], [])
        assert item["expires_at"] == pending["expires_at"]

    async def test_pages_newest_first_with_a_cursor(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        sent = [(await invite(client, mail_sink, admin))[0]["id"] for _ in range(3)]
        first = await listed(client, admin, "?limit=2")
        assert [i["id"] for i in first["items"]] == sent[:0:-1]
        assert first["next_cursor"]
        second = await listed(client, admin, f"?limit=2&cursor={first['next_cursor']}")
        assert [i["id"] for i in second["items"]] == sent[:1]
        assert second["next_cursor"] is None
        bad = await client.get(f"{INVITATIONS}?limit=0", headers=admin.auth)
        assert bad.status == 422

    async def test_members_who_are_not_administrators_get_403(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        invitation, token = await invite(client, mail_sink, admin)
        # The Administrator *role* gives every permission, not the org role the
        # contract asks for here.
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                         ["Administrator"])
        for method, path in (("GET", INVITATIONS),
                             ("DELETE", f"{INVITATIONS}/{invitation['id']}")):
            response = await client.request(method, path, headers=member.auth)
            assert response.status == 403, (method, await response.text())
            assert (await response.json())["code"] == "org_admin_required"
        assert [i["id"] for i in (await listed(client, admin))["items"]] == [invitation["id"]]
        assert (await accept_as_new(client, token)).status == 200

    async def test_another_orgs_invitation_is_404_and_not_listed(
            self, client: Any, mail_sink: Any) -> None:
        org_a = await signed_up(client, mail_sink, org_name="Org A")
        org_b = await signed_up(client, mail_sink, org_name="Org B")
        theirs, token = await invite(client, mail_sink, org_b)
        assert (await listed(client, org_a))["items"] == []
        response = await client.delete(f"{INVITATIONS}/{theirs['id']}", headers=org_a.auth)
        assert response.status == 404
        assert (await response.json())["code"] == "not_found"
        assert [i["id"] for i in (await listed(client, org_b))["items"]] == [theirs["id"]]
        assert (await accept_as_new(client, token)).status == 200


class TestRevoke:
    async def test_revoking_kills_the_link_and_is_audited(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        invitation, token = await invite(client, mail_sink, admin, org_role="administrator")
        response = await client.delete(f"{INVITATIONS}/{invitation['id']}", headers=admin.auth)
        assert response.status == 204
        refused = await accept_as_new(client, token)
        assert refused.status == 400
        assert (await refused.json())["code"] == "invalid_token"
        assert await membership(owner_conn, admin.org_id, invitation["email"]) is None
        [entry] = await revocations(owner_conn, invitation["id"])
        assert (entry["actor_type"], entry["actor_id"]) == ("user", admin.user_id)
        assert entry["request_id"] == response.headers["X-Request-ID"]
        assert entry["details"]["reason"] == "revoked"
        assert entry["details"]["email"] == invitation["email"]
        again = await client.delete(f"{INVITATIONS}/{invitation['id']}", headers=admin.auth)
        assert again.status == 404

    async def test_used_or_expired_invitations_cannot_be_revoked(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        used, token = await invite(client, mail_sink, admin)
        assert (await accept_as_new(client, token)).status == 200
        expired, _ = await invite(client, mail_sink, admin)
        await owner_conn.execute("update invitations set expires_at = now() - interval '1 s' "
                                 "where id = $1", UUID(expired["id"]))
        for invitation in (used, expired):
            response = await client.delete(f"{INVITATIONS}/{invitation['id']}",
                                           headers=admin.auth)
            assert response.status == 404
        for bad_id in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
            response = await client.delete(f"{INVITATIONS}/{bad_id}", headers=admin.auth)
            assert response.status == 404

    async def test_inviting_an_address_again_replaces_its_invitation(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        email = unique_email("twice")
        first, first_token = await invite(client, mail_sink, admin, email,
                                          org_role="administrator")
        second, second_token = await invite(client, mail_sink, admin, email.upper())
        assert first_token != second_token
        assert [i["id"] for i in (await listed(client, admin))["items"]] == [second["id"]]
        [entry] = await revocations(owner_conn, first["id"])
        assert entry["details"]["reason"] == "superseded"
        refused = await accept_as_new(client, first_token)
        assert (await refused.json())["code"] == "invalid_token"
        assert (await accept_as_new(client, second_token)).status == 200
        assert await membership(owner_conn, admin.org_id, email.upper()) == "member"

    async def test_concurrent_invitations_of_one_address_leave_one_open(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        email = unique_email("racing")
        responses = await asyncio.gather(*[
            client.post(INVITATIONS, headers=admin.auth, json={"email": email})
            for _ in range(6)])
        statuses = [r.status for r in responses]
        assert set(statuses) <= {201, 409} and 201 in statuses, statuses
        for response in responses:
            if response.status == 409:
                assert (await response.json())["code"] == "invitation_pending"
        created = {(await r.json())["id"] for r in responses if r.status == 201}
        [open_one] = (await listed(client, admin))["items"]
        assert open_one["id"] in created
        assert await owner_conn.fetchval(
            "select count(*) from invitations where org_id = $1 and revoked_at is null",
            admin.org_id) == 1


class TestInviterAuthority:
    async def test_a_removed_administrators_invitations_die_with_their_membership(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        owner = await signed_up(client, mail_sink)
        insider = await second_admin(client, mail_sink, owner_conn, owner)
        # An address the insider controls, invited to come back as an administrator.
        backdoor, token = await invite(client, mail_sink, insider, org_role="administrator")
        other, _ = await invite(client, mail_sink, insider)
        removed = await client.delete(f"/api/v1/org/members/{insider.user_id}",
                                      headers=owner.auth)
        assert removed.status == 204
        refused = await accept_as_new(client, token)
        assert refused.status == 400
        assert (await refused.json())["code"] == "invalid_token"
        assert await membership(owner_conn, owner.org_id, backdoor["email"]) is None
        assert (await listed(client, owner))["items"] == []
        [entry] = await revocations(owner_conn, backdoor["id"])
        assert entry["details"]["reason"] == "inviter_removed"
        assert entry["details"]["invited_by"] == str(insider.user_id)
        # Written by the removal itself, in its transaction.
        assert (entry["actor_id"], entry["request_id"]) == (
            owner.user_id, removed.headers["X-Request-ID"])
        assert len(await revocations(owner_conn, other["id"])) == 1
        # Both entries written in one batch, each linked into the org's hash chain.
        assert (await verify(owner_conn, current_key(), owner.org_id)).breaks == []

    async def test_a_demoted_administrators_invitations_die_too(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        owner = await signed_up(client, mail_sink)
        insider = await second_admin(client, mail_sink, owner_conn, owner)
        backdoor, token = await invite(client, mail_sink, insider, org_role="administrator")
        kept, kept_token = await invite(client, mail_sink, owner)
        demoted = await client.patch(f"/api/v1/org/members/{insider.user_id}",
                                     headers=owner.auth, json={"org_role": "member"})
        assert demoted.status == 200
        refused = await accept_as_new(client, token)
        assert (refused.status, (await refused.json())["code"]) == (400, "invalid_token")
        assert await membership(owner_conn, owner.org_id, backdoor["email"]) is None
        [entry] = await revocations(owner_conn, backdoor["id"])
        assert entry["details"]["reason"] == "inviter_demoted"
        # Only the demoted administrator's invitations die.
        assert [i["id"] for i in (await listed(client, owner))["items"]] == [kept["id"]]
        assert (await accept_as_new(client, kept_token)).status == 200

    async def test_acceptance_rechecks_the_inviter_and_the_invitation_dies(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        """Whatever took the authority away without revoking (data from before
        revocation existed, a change made outside the API), acceptance finds it."""
        owner = await signed_up(client, mail_sink)
        insider = await second_admin(client, mail_sink, owner_conn, owner)
        backdoor, token = await invite(client, mail_sink, insider, org_role="administrator")
        await owner_conn.execute("update memberships set org_role = 'member' "
                                 "where org_id = $1 and user_id = $2",
                                 owner.org_id, insider.user_id)
        refused = await accept_as_new(client, token)
        assert (refused.status, (await refused.json())["code"]) == (400, "invalid_token")
        assert await membership(owner_conn, owner.org_id, backdoor["email"]) is None
        row = await owner_conn.fetchrow("select revoked_at, revoked_reason from invitations "
                                        "where id = $1", UUID(backdoor["id"]))
        assert row["revoked_at"] is not None
        assert row["revoked_reason"] == "inviter_not_administrator"
        [entry] = await revocations(owner_conn, backdoor["id"])
        assert (entry["actor_type"], entry["actor_id"]) == ("system", None)
        # Dead for good: giving the inviter their role back does not revive it.
        await owner_conn.execute("update memberships set org_role = 'administrator' "
                                 "where org_id = $1 and user_id = $2",
                                 owner.org_id, insider.user_id)
        assert (await accept_as_new(client, token)).status == 400

    async def test_an_inviter_demoted_after_their_token_was_checked_cannot_invite(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        owner = await signed_up(client, mail_sink)
        insider = await second_admin(client, mail_sink, owner_conn, owner)
        # Their cached authorisation still says administrator (nothing bumped it): the
        # invitation's own transaction must look again.
        await owner_conn.execute("update memberships set org_role = 'member' "
                                 "where org_id = $1 and user_id = $2",
                                 owner.org_id, insider.user_id)
        response = await client.post(INVITATIONS, headers=insider.auth,
                                     json={"email": unique_email(), "org_role": "administrator"})
        assert response.status == 403
        assert (await response.json())["code"] == "org_admin_required"
        assert (await listed(client, owner))["items"] == []

    async def test_a_disabled_administrators_invitations_die(
            self, client: Any, mail_sink: Any, owner_conn: Any, config: Config) -> None:
        owner = await signed_up(client, mail_sink)
        insider = await second_admin(client, mail_sink, owner_conn, owner)
        backdoor, token = await invite(client, mail_sink, insider, org_role="administrator")
        platform = await platform_admin(client, config)
        disabled = await client.patch(f"/api/v1/admin/users/{insider.user_id}",
                                      headers=platform.auth, json={"disabled": True})
        assert disabled.status == 200
        [entry] = await revocations(owner_conn, backdoor["id"])
        assert entry["details"]["reason"] == "inviter_disabled"
        assert entry["actor_id"] == platform.user_id
        enabled = await client.patch(f"/api/v1/admin/users/{insider.user_id}",
                                     headers=platform.auth, json={"disabled": False})
        assert enabled.status == 200
        refused = await accept_as_new(client, token)
        assert (refused.status, (await refused.json())["code"]) == (400, "invalid_token")
        assert await membership(owner_conn, owner.org_id, backdoor["email"]) is None

    async def test_an_invitation_to_a_disabled_org_waits_for_it(
            self, client: Any, mail_sink: Any, owner_conn: Any, config: Config) -> None:
        owner = await signed_up(client, mail_sink)
        invitation, token = await invite(client, mail_sink, owner)
        platform = await platform_admin(client, config)
        path = f"/api/v1/admin/orgs/{owner.org_id}"
        assert (await client.post(f"{path}/disable", headers=platform.auth)).status == 200
        refused = await accept_as_new(client, token)
        assert (refused.status, (await refused.json())["code"]) == (403, "org_disabled")
        assert await membership(owner_conn, owner.org_id, invitation["email"]) is None
        assert (await client.post(f"{path}/enable", headers=platform.auth)).status == 200
        accepted = await accept_as_new(client, token)
        assert accepted.status == 200, await accepted.text()

    async def test_acceptance_racing_removal_of_the_inviter_never_leaves_both(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        """Accepted and then the inviter removed, or revoked and not joined: never a
        member who joined through an invitation the removal revoked."""
        for _ in range(6):
            owner = await signed_up(client, mail_sink)
            insider = await second_admin(client, mail_sink, owner_conn, owner)
            backdoor, token = await invite(client, mail_sink, insider,
                                           org_role="administrator")
            accepted, removed = await asyncio.gather(
                accept_as_new(client, token),
                client.delete(f"/api/v1/org/members/{insider.user_id}", headers=owner.auth))
            assert removed.status == 204
            row = await owner_conn.fetchrow(
                "select accepted_at is not null as accepted, revoked_reason from invitations "
                "where id = $1", UUID(backdoor["id"]))
            joined = await membership(owner_conn, owner.org_id, backdoor["email"])
            if accepted.status == 200:
                assert (row["accepted"], row["revoked_reason"], joined) == \
                    (True, None, "administrator")
            else:
                assert accepted.status == 400, await accepted.text()
                assert (row["accepted"], row["revoked_reason"], joined) == \
                    (False, "inviter_removed", None)

    async def test_existing_accepted_invitations_are_untouched_by_removal(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        owner = await signed_up(client, mail_sink)
        insider = await second_admin(client, mail_sink, owner_conn, owner)
        joined, token = await invite(client, mail_sink, insider)
        assert (await accept_as_new(client, token)).status == 200
        await client.delete(f"/api/v1/org/members/{insider.user_id}", headers=owner.auth)
        assert await revocations(owner_conn, joined["id"]) == []
        assert await membership(owner_conn, owner.org_id, joined["email"]) == "member"


class TestDocument:
    async def test_an_invitation_to_a_look_alike_address_does_not_reach_the_account(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        owner = await signed_up(client, mail_sink)
        local = secrets.token_hex(4)
        email, password, _ = await register(client, mail_sink,
                                            email=f"strasse-{local}@example.test")
        _, token = await invite(client, mail_sink, owner, email=f"straße-{local}@example.test")
        refused = await client.post(ACCEPT, json={"token": token, "password": password})
        assert refused.status == 409
        assert (await refused.json())["code"] == "email_conflict"
        assert await membership(owner_conn, owner.org_id, email) is None
        same = await login(client, email, password)
        signed_in = await client.post(ACCEPT, json={"token": token}, headers=same.auth)
        assert signed_in.status == 409
        assert await membership(owner_conn, owner.org_id, email) is None

    async def test_the_routes_are_in_the_openapi_document(self, client: Any) -> None:
        spec = await (await client.get("/api/v1/openapi.json")).json()
        listing = spec["paths"][INVITATIONS]["get"]
        assert listing["x-access"].startswith("org-admin")
        assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor"}
        schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
        ref = schema["$ref"].rsplit("/", 1)[-1]
        assert set(spec["components"]["schemas"][ref]["properties"]) == {"items", "next_cursor"}
        revoke = spec["paths"][f"{INVITATIONS}/{{invitation_id}}"]["delete"]
        assert revoke["x-access"].startswith("org-admin")
        assert "204" in revoke["responses"]
