"""Joining an org by invitation, as a flow without HTTP (archomata.orgs.service): real
PostgreSQL and Redis, an AuditContext, the sign-in's collaborators."""

from __future__ import annotations

from typing import Any

import pytest

from archomata.access.principal import OrgRole
from archomata.audit import AuditContext
from archomata.db import service_tx
from archomata.errors import BadRequest, Forbidden, Unauthorized, ValidationFailed
from archomata.identity.onboarding import NewAccount, create_user_with_org
from archomata.identity.signin import Door
from archomata.orgs import service as joining
from archomata.orgs.store import invitations
from tests.factories import strong_password, unique_email
from tests.identity.test_signin import caller, door, entries

__all__ = ["door"]  # the fixture, shared with the sign-in's tests


async def org_of_admin(door: Door) -> NewAccount:
    return await create_user_with_org(
        door.pool, AuditContext.system(), email=unique_email("inviter"), name="Inviter",
        password_hash=await door.passwords.hash(strong_password()), org_name="Joined Org",
        verified=True)


async def invitation_to(door: Door, admin: NewAccount, email: str) -> str:
    async with service_tx(door.pool, org_id=admin.org.id) as tx:
        made = await invitations.insert(tx, admin.org.id, email, OrgRole.MEMBER, [], [],
                                        admin.user.id, 3600)
    assert made is not None
    return made[1]


async def test_a_new_account_joins_signs_in_and_the_token_is_spent(
        door: Door, owner_conn: Any) -> None:
    admin = await org_of_admin(door)
    email = unique_email("joiner")
    token = await invitation_to(door, admin, email)
    who = caller()
    opened = await joining.accept_invitation(
        door, who, joining.Acceptance(token, password=strong_password(), name="Joiner"))
    assert opened.user.email == email and opened.user.email_verified  # the mail proved it
    assert opened.membership is not None and opened.membership.org.id == admin.org.id
    live = await door.sessions.list_for_user(opened.user.id)
    assert [s.id for s in live] == [opened.session.id]
    role = await owner_conn.fetchval(
        "select org_role from memberships where org_id = $1 and user_id = $2",
        admin.org.id, opened.user.id)
    assert role == "member"
    logged = [(e["action"], e["actor_id"], e["org_id"]) for e in await entries(owner_conn, who)]
    assert logged == [("user.registered", opened.user.id, admin.org.id),
                      ("member.joined", opened.user.id, admin.org.id),
                      ("auth.login.succeeded", opened.user.id, admin.org.id)]
    with pytest.raises(BadRequest) as again:
        await joining.accept_invitation(door, caller(), joining.Acceptance(
            token, password=strong_password(), name="Twice"))
    assert again.value.code == "invalid_token"


async def test_an_existing_account_needs_its_password(door: Door, owner_conn: Any) -> None:
    admin = await org_of_admin(door)
    other = await org_of_admin(door)  # an account of its own elsewhere
    token = await invitation_to(door, admin, other.user.email)
    with pytest.raises(Unauthorized) as missing:
        await joining.accept_invitation(door, caller(), joining.Acceptance(token))
    with pytest.raises(Unauthorized) as wrong:
        await joining.accept_invitation(door, caller(), joining.Acceptance(
            token, password=strong_password()))
    assert missing.value.code == wrong.value.code == "invalid_credentials"
    assert await owner_conn.fetchval(
        "select count(*) from memberships where org_id = $1 and user_id = $2",
        admin.org.id, other.user.id) == 0
    # The signed-in account itself needs no password.
    opened = await joining.accept_invitation(door, caller(), joining.Acceptance(
        token, signed_in_user=other.user.id))
    assert opened.membership is not None and opened.membership.org.id == admin.org.id


async def test_a_new_account_needs_a_name_and_a_password(door: Door) -> None:
    admin = await org_of_admin(door)
    token = await invitation_to(door, admin, unique_email("nameless"))
    with pytest.raises(ValidationFailed) as refused:
        await joining.accept_invitation(door, caller(), joining.Acceptance(token))
    assert set(refused.value.errors or {}) == {"name", "password"}


async def test_a_disabled_org_keeps_the_link_and_an_orphaned_one_dies(
        door: Door, owner_conn: Any) -> None:
    admin = await org_of_admin(door)
    email = unique_email("waiting")
    token = await invitation_to(door, admin, email)
    await owner_conn.execute("update orgs set disabled_at = now() where id = $1", admin.org.id)
    with pytest.raises(Forbidden) as disabled:
        await joining.accept_invitation(door, caller(), joining.Acceptance(
            token, password=strong_password(), name="Waiting"))
    assert disabled.value.code == "org_disabled"
    await owner_conn.execute("update orgs set disabled_at = null where id = $1", admin.org.id)
    await owner_conn.execute(
        "update memberships set org_role = 'member' where org_id = $1 and user_id = $2",
        admin.org.id, admin.user.id)  # the inviter is no longer an administrator
    who = caller()
    with pytest.raises(BadRequest) as orphaned:
        await joining.accept_invitation(door, who, joining.Acceptance(
            token, password=strong_password(), name="Waiting"))
    assert orphaned.value.code == "invalid_token"
    [revoked] = await entries(owner_conn, who)
    assert (revoked["action"], revoked["actor_type"], revoked["details"]["reason"]) == (
        "member.invitation_revoked", "system", "inviter_not_administrator")
    assert await owner_conn.fetchval("select count(*) from users where email = $1", email) == 0

