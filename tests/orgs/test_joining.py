"""Joining an org by invitation, as a flow without HTTP (archomata.orgs.service): real
PostgreSQL and Redis, an AuditContext, the sign-in's collaborators."""

from __future__ import annotations

from typing import Any

import pytest

from archomata.audit import AuditContext
from archomata.db import service_tx
from archomata.errors import BadRequest, Forbidden, Unauthorized, ValidationFailed
from archomata.identity.onboarding import NewAccount, create_user_with_org
from archomata.identity.reception import Reception
from archomata.orgs import service as joining
from archomata.orgs.store import invitations
from archomata.tenancy.org_role import OrgRole
from tests.factories import strong_password, unique_email
from tests.identity.test_signin import caller, entries, reception

__all__ = ["reception"]  # the fixture, shared with the sign-in's tests


async def org_of_admin(reception: Reception) -> NewAccount:
    return await create_user_with_org(
        reception.pool, AuditContext.system(), email=unique_email("inviter"), name="Inviter",
        password_hash=await reception.passwords.hash(strong_password()), org_name="Joined Org",
        verified=True)


async def invitation_to(reception: Reception, admin: NewAccount, email: str) -> str:
    async with service_tx(reception.pool, org_id=admin.org.id) as tx:
        made = await invitations.insert(tx, admin.org.id, email, OrgRole.MEMBER, [], [],
                                        admin.user.id, 3600)
    assert made is not None
    return made[1]


async def test_a_new_account_joins_signs_in_and_the_token_is_spent(
        reception: Reception, owner_conn: Any) -> None:
    admin = await org_of_admin(reception)
    email = unique_email("joiner")
    token = await invitation_to(reception, admin, email)
    who = caller()
    opened = await joining.accept_invitation(
        reception, who, joining.Acceptance(token, password=strong_password(), name="Joiner"))
    assert opened.user.email == email and opened.user.email_verified  # the mail proved it
    assert opened.membership is not None and opened.membership.org.id == admin.org.id
    live = await reception.sessions.list_for_user(opened.user.id)
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
        await joining.accept_invitation(reception, caller(), joining.Acceptance(
            token, password=strong_password(), name="Twice"))
    assert again.value.code == "invalid_token"


async def test_an_existing_account_needs_its_password(reception: Reception,
                                                      owner_conn: Any) -> None:
    admin = await org_of_admin(reception)
    other = await org_of_admin(reception)  # an account of its own elsewhere
    token = await invitation_to(reception, admin, other.user.email)
    with pytest.raises(Unauthorized) as missing:
        await joining.accept_invitation(reception, caller(), joining.Acceptance(token))
    with pytest.raises(Unauthorized) as wrong:
        await joining.accept_invitation(reception, caller(), joining.Acceptance(
            token, password=strong_password()))
    assert missing.value.code == wrong.value.code == "invalid_credentials"
    assert await owner_conn.fetchval(
        "select count(*) from memberships where org_id = $1 and user_id = $2",
        admin.org.id, other.user.id) == 0
    # The signed-in account itself needs no password.
    opened = await joining.accept_invitation(reception, caller(), joining.Acceptance(
        token, signed_in_user=other.user.id))
    assert opened.membership is not None and opened.membership.org.id == admin.org.id


async def test_a_new_account_needs_a_name_and_a_password(reception: Reception) -> None:
    admin = await org_of_admin(reception)
    token = await invitation_to(reception, admin, unique_email("nameless"))
    with pytest.raises(ValidationFailed) as refused:
        await joining.accept_invitation(reception, caller(), joining.Acceptance(token))
    assert set(refused.value.errors or {}) == {"name", "password"}


async def test_a_disabled_org_keeps_the_link_and_an_orphaned_one_dies(
        reception: Reception, owner_conn: Any) -> None:
    admin = await org_of_admin(reception)
    email = unique_email("waiting")
    token = await invitation_to(reception, admin, email)
    await owner_conn.execute("update orgs set disabled_at = now() where id = $1", admin.org.id)
    with pytest.raises(Forbidden) as disabled:
        await joining.accept_invitation(reception, caller(), joining.Acceptance(
            token, password=strong_password(), name="Waiting"))
    assert disabled.value.code == "org_disabled"
    await owner_conn.execute("update orgs set disabled_at = null where id = $1", admin.org.id)
    await owner_conn.execute(
        "update memberships set org_role = 'member' where org_id = $1 and user_id = $2",
        admin.org.id, admin.user.id)  # the inviter is no longer an administrator
    who = caller()
    with pytest.raises(BadRequest) as orphaned:
        await joining.accept_invitation(reception, who, joining.Acceptance(
            token, password=strong_password(), name="Waiting"))
    assert orphaned.value.code == "invalid_token"
    [revoked] = await entries(owner_conn, who)
    assert (revoked["action"], revoked["actor_type"], revoked["details"]["reason"]) == (
        "member.invitation_revoked", "system", "inviter_not_administrator")
    assert await owner_conn.fetchval("select count(*) from users where email = $1", email) == 0

