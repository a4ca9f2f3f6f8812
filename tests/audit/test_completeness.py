"""Every state-changing route writes its audit entry, and a change that fails writes none.

SAMPLES holds one sample call for every POST, PUT, PATCH and DELETE route under /api/v1:
the test makes the call with valid input and finds exactly the entries the sample names
(one, unless the request is also an authentication event), with the right action,
resource, request id and client IP; before that it makes a call that changes nothing
(invalid input, an unknown id, nothing to end) and finds no entry at all.

A route that is in neither SAMPLES nor EXEMPT fails
test_every_state_changing_route_has_a_sample: whoever adds a route adds its sample.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import jwt
import pytest

from archomata import keys
from archomata.app import create_app
from archomata.audit.actions import AuditAction
from archomata.config import Config
from tests.factories import (
    FRONTEND,
    Session,
    agent_auth,
    agent_with_key,
    login,
    member_with_roles,
    platform_admin,
    register,
    signed_up,
    strong_password,
    trading_account,
    unique_email,
    wait_for_mail,
)
from tests.identity.test_mfa import challenge, code, enrol

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}

# Routes that change state and write no entry, each with the reason.
EXEMPT: dict[str, str] = {
    # Rotating the refresh token is the session going on, not an event: every tab does it
    # every 15 minutes and nobody's access changes. What matters there, a replayed token,
    # writes auth.refresh.reuse_detected (tests/identity/test_auth.py).
    "POST /api/v1/auth/refresh": "rotation is not an event; reuse is audited",
    # What a terminal reports, seconds apart, is telemetry, not a change anyone made: an
    # entry per push would drown the log. What agents do is audited: credentials fetched,
    # orders executed or rejected.
    "POST /api/v1/bridge/heartbeat": "telemetry: last seen and version",
    "PUT /api/v1/bridge/accounts/{login}/state": "telemetry: balances and open positions",
    "POST /api/v1/bridge/accounts/{login}/deals": "telemetry: the broker's deal history",
    # An unconfirmed secret changes nothing of how anyone signs in (and replaces only an
    # unconfirmed one); the first code confirming it writes mfa.enabled.
    "POST /api/v1/me/mfa/totp": "an unconfirmed secret; confirming writes mfa.enabled",
}


# Routes that should write an entry and do not yet, with whose work that is: strict, so
# the day the entry appears the mark must go.
KNOWN_GAPS: dict[str, str] = {}


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    """A prepared sample: the call, the entry it must write, and a call that changes
    nothing."""

    call: Call
    resource_id: str | Callable[[Any], str] | None  # None: any, but present
    no_change: Call | None
    org_id: UUID | str | None = "any"  # the entry's org; "any" when not checked


@dataclass
class World:
    client: Any
    mail_sink: Any
    owner_conn: asyncpg.Connection
    config: Config

    async def admin(self) -> Session:
        return await signed_up(self.client, self.mail_sink)

    async def member(self, admin: Session, roles: list[str] | None = None) -> Session:
        assert admin.org_id is not None
        return await member_with_roles(self.client, self.mail_sink, self.owner_conn,
                                       admin.org_id, roles or ["Viewer"])

    async def group(self, admin: Session) -> str:
        response = await send(self.client, Call("POST", "/api/v1/groups", {
            "name": f"Group {uuid4().hex[:6]}"}, admin.auth))
        assert response.status == 201, await response.text()
        return (await response.json())["id"]

    async def role_id(self, session: Session, name: str) -> str:
        response = await self.client.get("/api/v1/roles", headers=session.auth)
        return next(r["id"] for r in (await response.json())["items"] if r["name"] == name)


Prepare = Callable[[World], Awaitable[Case]]


@dataclass(frozen=True)
class Sample:
    action: AuditAction
    resource_type: str
    prepare: Prepare
    also: tuple[AuditAction, ...] = ()  # other events the same request is, each audited


SAMPLES: dict[str, Sample] = {}


def sample(route: str, action: AuditAction, resource_type: str,
           also: tuple[AuditAction, ...] = ()) -> Callable[[Prepare], Prepare]:
    def add(prepare: Prepare) -> Prepare:
        assert route not in SAMPLES, route
        SAMPLES[route] = Sample(action, resource_type, prepare, also)
        return prepare
    return add


def random_id() -> str:
    return str(uuid4())


# --- /auth ---------------------------------------------------------------------------

@sample("POST /api/v1/auth/register", AuditAction.USER_REGISTERED, "user")
async def _register(w: World) -> Case:
    body = {"email": unique_email(), "password": strong_password(), "name": "New",
            "org_name": "New Org"}
    return Case(Call("POST", "/api/v1/auth/register", body), lambda r: r["user"]["id"],
                Call("POST", "/api/v1/auth/register", {**body, "password": "short"}))


@sample("POST /api/v1/auth/verify-email", AuditAction.AUTH_EMAIL_VERIFIED, "user")
async def _verify_email(w: World) -> Case:
    email, _, user = await register(w.client, w.mail_sink, verify=False)
    token = await wait_for_mail(w.mail_sink, email, "verify")
    return Case(Call("POST", "/api/v1/auth/verify-email", {"token": token}), user["id"],
                Call("POST", "/api/v1/auth/verify-email", {"token": "not-a-token"}),
                org_id=None)


@sample("POST /api/v1/auth/resend-verification", AuditAction.AUTH_EMAIL_VERIFICATION_SENT,
        "user")
async def _resend_verification(w: World) -> Case:
    email, _, user = await register(w.client, w.mail_sink, verify=False)
    return Case(Call("POST", "/api/v1/auth/resend-verification", {"email": email}),
                user["id"], Call("POST", "/api/v1/auth/resend-verification",
                                 {"email": unique_email("nobody")}))


@sample("POST /api/v1/auth/login", AuditAction.AUTH_LOGIN_SUCCEEDED, "session")
async def _login(w: World) -> Case:
    admin = await w.admin()
    return Case(Call("POST", "/api/v1/auth/login", {"email": admin.email,
                                                    "password": admin.password}),
                lambda r: _claims(r["access_token"])["sid"],
                Call("POST", "/api/v1/auth/login", {"email": admin.email}), admin.org_id)


@sample("POST /api/v1/auth/mfa/verify", AuditAction.AUTH_LOGIN_SUCCEEDED, "session")
async def _mfa_verify(w: World) -> Case:
    admin = await w.admin()
    secret, _ = await enrol(w.client, admin)
    token = await challenge(w.client, admin)
    path = "/api/v1/auth/mfa/verify"
    # An unknown challenge opens nothing, and writes nothing (a wrong code would be audited).
    return Case(Call("POST", path, {"mfa_token": token, "code": code(secret, 1)}),
                lambda r: _claims(r["access_token"])["sid"],
                Call("POST", path, {"mfa_token": "x" * 43, "code": code(secret, 1)}),
                admin.org_id)


@sample("POST /api/v1/me/mfa/totp/confirm", AuditAction.MFA_ENABLED, "user")
async def _mfa_confirm(w: World) -> Case:
    admin = await w.admin()
    started = await w.client.post("/api/v1/me/mfa/totp", headers=admin.auth,
                                  json={"current_password": admin.password})
    secret = (await started.json())["secret"]
    path = "/api/v1/me/mfa/totp/confirm"
    # No code at all is refused before anything is judged (a wrong code is audited).
    return Case(Call("POST", path, {"code": code(secret)}, admin.auth), str(admin.user_id),
                Call("POST", path, {}, admin.auth), admin.org_id)


@sample("POST /api/v1/auth/step-up", AuditAction.AUTH_STEP_UP, "session",
        also=(AuditAction.MFA_RECOVERY_CODE_USED,))  # answered by a recovery code
async def _step_up(w: World) -> Case:
    admin = await w.admin()
    _, recovery = await enrol(w.client, admin)
    path = "/api/v1/auth/step-up"
    # Both answers at once is refused before anything is proven (a wrong code is audited).
    return Case(Call("POST", path, {"recovery_code": recovery[0]}, admin.auth),
                _claims(admin.access)["sid"],
                Call("POST", path, {"recovery_code": recovery[0], "code": "123456"},
                     admin.auth), admin.org_id)


async def _stepped_up(w: World) -> tuple[Session, dict[str, str]]:
    """An enrolled admin, and their token once stepped up (the first one never was)."""
    admin = await w.admin()
    _, recovery = await enrol(w.client, admin)
    stepped = await w.client.post("/api/v1/auth/step-up", headers=admin.auth,
                                  json={"recovery_code": recovery[0]})
    assert stepped.status == 200, await stepped.text()
    return admin, {"Authorization": f"Bearer {(await stepped.json())['access_token']}"}


@sample("DELETE /api/v1/me/mfa/totp", AuditAction.MFA_DISABLED, "user")
async def _mfa_disable(w: World) -> Case:
    admin, fresh = await _stepped_up(w)
    path = "/api/v1/me/mfa/totp"
    return Case(Call("DELETE", path, headers=fresh), str(admin.user_id),
                Call("DELETE", path, headers=admin.auth), admin.org_id)


@sample("POST /api/v1/me/mfa/recovery-codes", AuditAction.MFA_RECOVERY_CODES_REGENERATED,
        "user")
async def _mfa_regenerate(w: World) -> Case:
    admin, fresh = await _stepped_up(w)
    path = "/api/v1/me/mfa/recovery-codes"
    return Case(Call("POST", path, headers=fresh), str(admin.user_id),
                Call("POST", path, headers=admin.auth), admin.org_id)


@sample("POST /api/v1/auth/logout", AuditAction.AUTH_LOGOUT, "session")
async def _logout(w: World) -> Case:
    admin = await w.admin()
    assert admin.refresh is not None
    # Logging out without a session (no cookie, no token) ends nothing: no entry.
    return Case(Call("POST", "/api/v1/auth/logout", headers=admin.cookie),
                _claims(admin.access)["sid"], Call("POST", "/api/v1/auth/logout"),
                admin.org_id)


@sample("POST /api/v1/auth/logout-all", AuditAction.AUTH_LOGOUT_ALL, "user")
async def _logout_all(w: World) -> Case:
    admin = await w.admin()
    return Case(Call("POST", "/api/v1/auth/logout-all", headers=admin.auth), str(admin.user_id),
                Call("POST", "/api/v1/auth/logout-all"), admin.org_id)


@sample("POST /api/v1/auth/password-reset/request", AuditAction.AUTH_PASSWORD_RESET_REQUESTED,
        "user")
async def _reset_request(w: World) -> Case:
    admin = await w.admin()
    path = "/api/v1/auth/password-reset/request"
    return Case(Call("POST", path, {"email": admin.email}), str(admin.user_id),
                Call("POST", path, {"email": unique_email("nobody")}))


@sample("POST /api/v1/auth/password-reset/confirm",
        AuditAction.AUTH_PASSWORD_RESET_COMPLETED, "user")
async def _reset_confirm(w: World) -> Case:
    admin = await w.admin()
    await w.client.post("/api/v1/auth/password-reset/request", json={"email": admin.email})
    token = await wait_for_mail(w.mail_sink, admin.email, "reset")
    path = "/api/v1/auth/password-reset/confirm"
    return Case(Call("POST", path, {"token": token, "new_password": strong_password()}),
                str(admin.user_id),
                Call("POST", path, {"token": "not-a-token", "new_password": strong_password()}))


@sample("POST /api/v1/auth/password/change", AuditAction.AUTH_PASSWORD_CHANGED, "user")
async def _password_change(w: World) -> Case:
    admin = await w.admin()
    path = "/api/v1/auth/password/change"
    return Case(Call("POST", path, {"current_password": admin.password,
                                    "new_password": strong_password()}, admin.auth),
                str(admin.user_id),
                Call("POST", path, {"current_password": strong_password(),
                                    "new_password": strong_password()}, admin.auth),
                admin.org_id)


@sample("POST /api/v1/auth/switch-org", AuditAction.AUTH_ORG_SWITCHED, "org")
async def _switch_org(w: World) -> Case:
    admin = await w.admin()
    member = await w.member(admin)
    me = await (await w.client.get("/api/v1/me", headers=member.auth)).json()
    own = next(o["id"] for o in me["orgs"] if o["id"] != str(admin.org_id))
    path = "/api/v1/auth/switch-org"
    return Case(Call("POST", path, {"org_id": own}, member.auth), own,
                Call("POST", path, {"org_id": random_id()}, member.auth), UUID(own))


@sample("DELETE /api/v1/auth/sessions/{session_id}", AuditAction.AUTH_SESSION_REVOKED,
        "session")
async def _delete_session(w: World) -> Case:
    admin = await w.admin()
    other = await login(w.client, admin.email, admin.password)
    sid = _claims(other.access)["sid"]
    return Case(Call("DELETE", f"/api/v1/auth/sessions/{sid}", headers=admin.auth), sid,
                Call("DELETE", f"/api/v1/auth/sessions/{random_id()}", headers=admin.auth),
                admin.org_id)


@sample("POST /api/v1/auth/accept-invitation", AuditAction.MEMBER_JOINED, "member",
        also=(AuditAction.AUTH_LOGIN_SUCCEEDED,))  # joining also signs the invitee in
async def _accept_invitation(w: World) -> Case:
    admin = await w.admin()
    invitee = await w.admin()
    invited = await send(w.client, Call("POST", "/api/v1/org/invitations",
                                        {"email": invitee.email}, admin.auth))
    assert invited.status == 201, await invited.text()
    token = await wait_for_mail(w.mail_sink, invitee.email, "invited")
    path = "/api/v1/auth/accept-invitation"
    return Case(Call("POST", path, {"token": token}, invitee.auth), str(invitee.user_id),
                Call("POST", path, {"token": "not-a-token"}, invitee.auth), admin.org_id)


# --- /admin --------------------------------------------------------------------------

@sample("POST /api/v1/admin/orgs/{org_id}/disable", AuditAction.ORG_DISABLED, "org")
async def _disable_org(w: World) -> Case:
    target, admin = await w.admin(), await platform_admin(w.client, w.config)
    return Case(Call("POST", f"/api/v1/admin/orgs/{target.org_id}/disable", headers=admin.auth),
                str(target.org_id),
                Call("POST", f"/api/v1/admin/orgs/{random_id()}/disable", headers=admin.auth),
                target.org_id)


@sample("POST /api/v1/admin/orgs/{org_id}/enable", AuditAction.ORG_ENABLED, "org")
async def _enable_org(w: World) -> Case:
    target, admin = await w.admin(), await platform_admin(w.client, w.config)
    disabled = await send(w.client, Call(
        "POST", f"/api/v1/admin/orgs/{target.org_id}/disable", headers=admin.auth))
    assert disabled.status == 200
    return Case(Call("POST", f"/api/v1/admin/orgs/{target.org_id}/enable", headers=admin.auth),
                str(target.org_id),
                Call("POST", f"/api/v1/admin/orgs/{random_id()}/enable", headers=admin.auth),
                target.org_id)


@sample("PATCH /api/v1/admin/users/{user_id}", AuditAction.USER_UPDATED, "user")
async def _update_user(w: World) -> Case:
    target, admin = await w.admin(), await platform_admin(w.client, w.config)
    path = f"/api/v1/admin/users/{target.user_id}"
    return Case(Call("PATCH", path, {"disabled": True}, admin.auth), str(target.user_id),
                Call("PATCH", path, {}, admin.auth), None)


# --- /org, /groups -------------------------------------------------------------------

@sample("PATCH /api/v1/org", AuditAction.ORG_UPDATED, "org")
async def _update_org(w: World) -> Case:
    admin = await w.admin()
    return Case(Call("PATCH", "/api/v1/org", {"name": "Renamed"}, admin.auth),
                str(admin.org_id), Call("PATCH", "/api/v1/org", {"name": ""}, admin.auth),
                admin.org_id)


@sample("POST /api/v1/org/invitations", AuditAction.MEMBER_INVITED, "invitation")
async def _invite(w: World) -> Case:
    admin = await w.admin()
    path = "/api/v1/org/invitations"
    return Case(Call("POST", path, {"email": unique_email("invitee")}, admin.auth),
                lambda r: r["id"], Call("POST", path, {"email": "not-an-email"}, admin.auth),
                admin.org_id)


@sample("DELETE /api/v1/org/invitations/{invitation_id}",
        AuditAction.MEMBER_INVITATION_REVOKED, "invitation")
async def _revoke_invitation(w: World) -> Case:
    admin = await w.admin()
    invited = await send(w.client, Call("POST", "/api/v1/org/invitations",
                                        {"email": unique_email("invitee")}, admin.auth))
    assert invited.status == 201, await invited.text()
    path = "/api/v1/org/invitations/{}"
    invitation_id = (await invited.json())["id"]
    return Case(Call("DELETE", path.format(invitation_id), headers=admin.auth), invitation_id,
                Call("DELETE", path.format(random_id()), headers=admin.auth), admin.org_id)


@sample("PATCH /api/v1/org/members/{user_id}", AuditAction.MEMBER_UPDATED, "member")
async def _update_member(w: World) -> Case:
    admin = await w.admin()
    member = await w.member(admin)
    path = f"/api/v1/org/members/{member.user_id}"
    return Case(Call("PATCH", path, {"org_role": "administrator"}, admin.auth),
                str(member.user_id), Call("PATCH", path, {"org_role": "boss"}, admin.auth),
                admin.org_id)


@sample("DELETE /api/v1/org/members/{user_id}", AuditAction.MEMBER_REMOVED, "member")
async def _remove_member(w: World) -> Case:
    admin = await w.admin()
    member = await w.member(admin)
    return Case(Call("DELETE", f"/api/v1/org/members/{member.user_id}", headers=admin.auth),
                str(member.user_id),
                Call("DELETE", f"/api/v1/org/members/{random_id()}", headers=admin.auth),
                admin.org_id)


@sample("PUT /api/v1/org/members/{user_id}/roles", AuditAction.ROLE_ASSIGNED, "member")
async def _member_roles(w: World) -> Case:
    admin = await w.admin()
    member = await w.member(admin)
    path = f"/api/v1/org/members/{member.user_id}/roles"
    return Case(Call("PUT", path, {"role_ids": [await w.role_id(admin, "Trader")]}, admin.auth),
                str(member.user_id), Call("PUT", path, {"role_ids": [random_id()]}, admin.auth),
                admin.org_id)


@sample("POST /api/v1/groups", AuditAction.GROUP_CREATED, "group")
async def _create_group(w: World) -> Case:
    admin = await w.admin()
    return Case(Call("POST", "/api/v1/groups", {"name": "Desk"}, admin.auth), lambda r: r["id"],
                Call("POST", "/api/v1/groups", {"name": ""}, admin.auth), admin.org_id)


@sample("PATCH /api/v1/groups/{group_id}", AuditAction.GROUP_UPDATED, "group")
async def _update_group(w: World) -> Case:
    admin = await w.admin()
    group = await w.group(admin)
    path = f"/api/v1/groups/{group}"
    return Case(Call("PATCH", path, {"name": "Renamed"}, admin.auth), group,
                Call("PATCH", path, {}, admin.auth), admin.org_id)


@sample("DELETE /api/v1/groups/{group_id}", AuditAction.GROUP_DELETED, "group")
async def _delete_group(w: World) -> Case:
    admin = await w.admin()
    group = await w.group(admin)
    return Case(Call("DELETE", f"/api/v1/groups/{group}", headers=admin.auth), group,
                Call("DELETE", f"/api/v1/groups/{random_id()}", headers=admin.auth),
                admin.org_id)


@sample("PUT /api/v1/groups/{group_id}/members", AuditAction.GROUP_MEMBERS_SET, "group")
async def _group_members(w: World) -> Case:
    admin = await w.admin()
    group = await w.group(admin)
    path = f"/api/v1/groups/{group}/members"
    return Case(Call("PUT", path, {"user_ids": [str(admin.user_id)]}, admin.auth), group,
                Call("PUT", path, {"user_ids": [random_id()]}, admin.auth), admin.org_id)


@sample("PUT /api/v1/groups/{group_id}/roles", AuditAction.GROUP_ROLES_SET, "group")
async def _group_roles(w: World) -> Case:
    admin = await w.admin()
    group = await w.group(admin)
    path = f"/api/v1/groups/{group}/roles"
    return Case(Call("PUT", path, {"role_ids": [await w.role_id(admin, "Viewer")]}, admin.auth),
                group, Call("PUT", path, {"role_ids": [random_id()]}, admin.auth),
                admin.org_id)


# --- trading -------------------------------------------------------------------------

MARKET_ORDER = {"symbol": "EURUSD", "side": "buy", "type": "market", "volume": "0.10"}
LIMITS = {"trading_enabled": True, "max_order_volume": "5", "max_open_positions": None,
          "max_daily_loss": None}


async def _desk(w: World) -> tuple[Session, dict[str, Any], str]:
    """An org administrator, an account assigned to an agent, and the agent's key."""
    admin = await w.admin()
    agent, key = await agent_with_key(w.client, admin)
    return admin, await trading_account(w.client, admin, agent_id=agent["id"]), key


async def _order(w: World, admin: Session, account: dict[str, Any]) -> str:
    response = await send(w.client, Call("POST", f"/api/v1/accounts/{account['id']}/orders",
                                         MARKET_ORDER, admin.auth))
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


@sample("POST /api/v1/agents", AuditAction.AGENT_CREATED, "agent")
async def _create_agent(w: World) -> Case:
    admin = await w.admin()
    return Case(Call("POST", "/api/v1/agents", {"name": "Terminal"}, admin.auth),
                lambda r: r["agent"]["id"],
                Call("POST", "/api/v1/agents", {"name": ""}, admin.auth), admin.org_id)


@sample("POST /api/v1/agents/{agent_id}/rotate-key", AuditAction.AGENT_KEY_ROTATED, "agent")
async def _rotate_key(w: World) -> Case:
    admin = await w.admin()
    agent, _ = await agent_with_key(w.client, admin)
    return Case(Call("POST", f"/api/v1/agents/{agent['id']}/rotate-key", headers=admin.auth),
                agent["id"], Call("POST", f"/api/v1/agents/{random_id()}/rotate-key",
                                  headers=admin.auth), admin.org_id)


@sample("DELETE /api/v1/agents/{agent_id}", AuditAction.AGENT_DELETED, "agent")
async def _delete_agent(w: World) -> Case:
    admin = await w.admin()
    agent, _ = await agent_with_key(w.client, admin)
    return Case(Call("DELETE", f"/api/v1/agents/{agent['id']}", headers=admin.auth),
                agent["id"], Call("DELETE", f"/api/v1/agents/{random_id()}",
                                  headers=admin.auth), admin.org_id)


@sample("POST /api/v1/accounts", AuditAction.ACCOUNT_CREATED, "account")
async def _create_account(w: World) -> Case:
    admin = await w.admin()
    body = {"name": "Main", "broker": "B", "server": "S", "login": 4711, "environment": "demo",
            "credentials": {"password": "broker-pw-123"}}
    return Case(Call("POST", "/api/v1/accounts", body, admin.auth), lambda r: r["id"],
                Call("POST", "/api/v1/accounts", {**body, "login": "4711"}, admin.auth),
                admin.org_id)


@sample("PATCH /api/v1/accounts/{account_id}", AuditAction.ACCOUNT_UPDATED, "account")
async def _update_account(w: World) -> Case:
    admin = await w.admin()
    account = await trading_account(w.client, admin)
    path = f"/api/v1/accounts/{account['id']}"
    return Case(Call("PATCH", path, {"name": "Renamed"}, admin.auth), account["id"],
                Call("PATCH", path, {}, admin.auth), admin.org_id)


@sample("DELETE /api/v1/accounts/{account_id}", AuditAction.ACCOUNT_DELETED, "account")
async def _delete_account(w: World) -> Case:
    admin = await w.admin()
    account = await trading_account(w.client, admin)
    return Case(Call("DELETE", f"/api/v1/accounts/{account['id']}", headers=admin.auth),
                account["id"], Call("DELETE", f"/api/v1/accounts/{random_id()}",
                                    headers=admin.auth), admin.org_id)


@sample("PUT /api/v1/accounts/{account_id}/risk-limits", AuditAction.RISK_LIMITS_UPDATED,
        "account")
async def _risk_limits(w: World) -> Case:
    admin = await w.admin()
    account = await trading_account(w.client, admin)
    path = f"/api/v1/accounts/{account['id']}/risk-limits"
    return Case(Call("PUT", path, LIMITS, admin.auth), account["id"],
                Call("PUT", path, {"trading_enabled": False}, admin.auth), admin.org_id)


@sample("POST /api/v1/accounts/{account_id}/orders", AuditAction.ORDER_CREATED, "order")
async def _place_order(w: World) -> Case:
    admin, account, _ = await _desk(w)
    path = f"/api/v1/accounts/{account['id']}/orders"
    return Case(Call("POST", path, MARKET_ORDER, admin.auth), lambda r: r["id"],
                Call("POST", path, {**MARKET_ORDER, "volume": 0.1}, admin.auth), admin.org_id)


@sample("POST /api/v1/accounts/{account_id}/positions/{ticket}/close",
        AuditAction.ORDER_CREATED, "order")
async def _close_position(w: World) -> Case:
    admin, account, key = await _desk(w)
    state = {"balance": "1", "equity": "1", "margin": "0", "free_margin": "1",
             "currency": "USD", "positions": [{
                 "ticket": 31, "symbol": "EURUSD", "side": "buy", "volume": "0.10",
                 "open_price": "1.1", "opened_at": "2026-11-28T09:30:00Z"}]}
    pushed = await send(w.client, Call("PUT", f"/api/v1/bridge/accounts/{account['login']}/state",
                                       state, agent_auth(key)))
    assert pushed.status == 204, await pushed.text()
    path = f"/api/v1/accounts/{account['id']}/positions"
    return Case(Call("POST", f"{path}/31/close", headers=admin.auth), lambda r: r["id"],
                Call("POST", f"{path}/32/close", headers=admin.auth), admin.org_id)


@sample("POST /api/v1/orders/{order_id}/cancel", AuditAction.ORDER_CANCELLED, "order")
async def _cancel_order(w: World) -> Case:
    admin, account, _ = await _desk(w)
    order_id = await _order(w, admin, account)
    return Case(Call("POST", f"/api/v1/orders/{order_id}/cancel", headers=admin.auth), order_id,
                Call("POST", f"/api/v1/orders/{random_id()}/cancel", headers=admin.auth),
                admin.org_id)


@sample("POST /api/v1/bridge/commands/{command_id}/result", AuditAction.ORDER_EXECUTED,
        "order")
async def _command_result(w: World) -> Case:
    admin, account, key = await _desk(w)
    order_id = await _order(w, admin, account)
    polled = await w.client.get("/api/v1/bridge/commands", headers=agent_auth(key))
    command = (await polled.json())["commands"][0]
    path = "/api/v1/bridge/commands/{}/result"
    return Case(Call("POST", path.format(command["id"]), {"status": "filled"}, agent_auth(key)),
                order_id, Call("POST", path.format(random_id()), {"status": "filled"},
                               agent_auth(key)), admin.org_id)


@sample("POST /api/v1/strategies", AuditAction.STRATEGY_CREATED, "strategy")
async def _create_strategy(w: World) -> Case:
    admin = await w.admin()
    return Case(Call("POST", "/api/v1/strategies", {"name": "Trend"}, admin.auth),
                lambda r: r["id"],
                Call("POST", "/api/v1/strategies", {"name": "Trend", "parameters": []},
                     admin.auth), admin.org_id)


async def _strategy(w: World, admin: Session) -> str:
    response = await send(w.client, Call("POST", "/api/v1/strategies",
                                         {"name": f"S {uuid4().hex[:6]}"}, admin.auth))
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


@sample("PATCH /api/v1/strategies/{strategy_id}", AuditAction.STRATEGY_UPDATED, "strategy")
async def _update_strategy(w: World) -> Case:
    admin = await w.admin()
    strategy = await _strategy(w, admin)
    path = f"/api/v1/strategies/{strategy}"
    return Case(Call("PATCH", path, {"enabled": True}, admin.auth), strategy,
                Call("PATCH", path, {}, admin.auth), admin.org_id)


@sample("DELETE /api/v1/strategies/{strategy_id}", AuditAction.STRATEGY_DELETED, "strategy")
async def _delete_strategy(w: World) -> Case:
    admin = await w.admin()
    strategy = await _strategy(w, admin)
    return Case(Call("DELETE", f"/api/v1/strategies/{strategy}", headers=admin.auth), strategy,
                Call("DELETE", f"/api/v1/strategies/{random_id()}", headers=admin.auth),
                admin.org_id)


# --- the checks ----------------------------------------------------------------------

def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def send(client: Any, call: Call) -> Any:
    response = await client.request(call.method, call.path, json=call.json,
                                    headers={"Origin": FRONTEND, **call.headers})
    # What a public /auth route does after its answer (a registration, a mailed link) is
    # the route's work too: its entries are looked for once it is done.
    await client.app[keys.LATER].drain(10)
    return response


ENTRIES_SINCE = """
    select action, org_id, actor_id, resource_type, resource_id, host(ip) as ip, user_agent,
           request_id
    from audit_log where occurred_at > $1 order by occurred_at
"""


async def entries_after(owner_conn: asyncpg.Connection, mark: Any) -> list[asyncpg.Record]:
    # The chain trigger stamps occurred_at when it appends, so this is what came after.
    return await owner_conn.fetch(ENTRIES_SINCE, mark)


def state_changing_routes(config: Config) -> set[str]:
    app = create_app(config)
    return {f"{r.method} {r.resource.canonical}" for r in app.router.routes()
            if r.method in STATE_CHANGING and r.resource is not None
            and r.resource.canonical.startswith("/api/v1/")}


def test_every_state_changing_route_has_a_sample(config: Config) -> None:
    routes = state_changing_routes(config)
    missing = sorted(routes - SAMPLES.keys() - EXEMPT.keys())
    assert not missing, f"add a sample to tests/audit/test_completeness.py for: {missing}"
    stale = sorted((SAMPLES.keys() | EXEMPT.keys()) - routes)
    assert not stale, f"samples for routes that no longer exist: {stale}"


@sample("DELETE /api/v1/me/identities/{identity_id}", AuditAction.USER_UPDATED,
        "user_identity")
async def _unlink_identity(w: World) -> Case:
    admin = await w.admin()  # has a password, so the identity may go
    identity_id = await w.owner_conn.fetchval(
        "insert into user_identities (user_id, provider, subject, email) "
        "values ($1, 'google', $2, $3) returning id", admin.user_id, random_id(), admin.email)
    return Case(Call("DELETE", f"/api/v1/me/identities/{identity_id}", headers=admin.auth),
                str(identity_id),
                Call("DELETE", f"/api/v1/me/identities/{random_id()}", headers=admin.auth),
                admin.org_id)


@pytest.mark.parametrize("route", [
    pytest.param(r, marks=pytest.mark.xfail(reason=KNOWN_GAPS[r], strict=True))
    if r in KNOWN_GAPS else r for r in sorted(SAMPLES)])
async def test_the_route_writes_its_entry_and_a_change_that_fails_none(
        route: str, client: Any, mail_sink: Any, owner_conn: asyncpg.Connection,
        config: Config) -> None:
    expected = SAMPLES[route]
    case = await expected.prepare(World(client, mail_sink, owner_conn, config))
    if case.no_change is not None:
        mark = await owner_conn.fetchval("select clock_timestamp()")
        response = await send(client, case.no_change)
        assert response.status != 500, await response.text()
        assert [e["action"] for e in await entries_after(owner_conn, mark)] == []

    mark = await owner_conn.fetchval("select clock_timestamp()")
    response = await send(client, case.call)
    assert response.status < 300, await response.text()
    entries = await entries_after(owner_conn, mark)
    assert sorted(e["action"] for e in entries) == sorted([expected.action, *expected.also])
    entry = next(e for e in entries if e["action"] == expected.action)
    assert entry["resource_type"] == expected.resource_type
    resource_id = case.resource_id
    if callable(resource_id):
        resource_id = resource_id(await response.json())
    assert entry["resource_id"] == resource_id if resource_id else entry["resource_id"]
    if case.org_id != "any":
        assert entry["org_id"] == case.org_id
    assert entry["request_id"] == response.headers["X-Request-ID"]
    assert entry["ip"] == "127.0.0.1"
    assert entry["user_agent"]
