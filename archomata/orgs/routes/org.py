"""The caller's organisation and its members: /org, /org/members, /org/invitations."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit, keys
from archomata.access import caller, roles
from archomata.access.guards import (
    authenticated,
    require_org_admin,
    require_permission,
    require_write,
)
from archomata.access.permissions import Permission
from archomata.access.step_up import require_step_up, step_up, step_up_exempt, step_up_when
from archomata.audit import AuditAction
from archomata.db import Tx, org_tx
from archomata.errors import Conflict, Forbidden, NotFound, ValidationFailed
from archomata.orgs.invitation_revocation import audit_revoked, revoke_with_inviter
from archomata.orgs.schemas import (
    InvitationCreateSchema,
    InvitationListSchema,
    InvitationSchema,
    MemberListSchema,
    MemberPatchSchema,
    MemberSchema,
    OrgPatchSchema,
    RoleIdsSchema,
)
from archomata.orgs.service import check_refs
from archomata.orgs.store import invitations, members
from archomata.orgs.store.invitations import RevokeReason
from archomata.tenancy import orgs
from archomata.tenancy.org_role import OrgRole
from archomata.web.json_io import json_response, load_body, uuid_param
from archomata.web.openapi import doc
from archomata.web.pagination import PageQuerySchema, listing, page_of
from archomata.web.schemas import OrgSchema

routes = web.RouteTableDef()


@routes.get("/api/v1/org")
@authenticated
@doc("The org of the access token", response=OrgSchema)
async def get_org(request: web.Request) -> web.Response:
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        org = await orgs.get(tx, org_id)
    if org is None:
        raise NotFound("No such organisation.")
    return json_response(org)


@routes.patch("/api/v1/org")
@require_org_admin
@require_write
@step_up_when("it sets require_mfa")
@doc("Rename the org, or require a second factor of its members (`require_mfa`: "
     "a member without one then gets 403 mfa_enrollment_required on the org's routes)",
     request=OrgPatchSchema, response=OrgSchema)
async def update_org(request: web.Request) -> web.Response:
    body = await load_body(request, OrgPatchSchema)
    if not body:
        raise ValidationFailed("Nothing to change.", errors={"_body": ["Give a field."]})
    if "require_mfa" in body:
        await require_step_up(request)
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        before = await orgs.get(tx, org_id)
        org = await orgs.update(tx, org_id, body.get("name"), body.get("require_mfa"))
        assert before is not None and org is not None
        changes = {k: {"from": getattr(before, k), "to": getattr(org, k)}
                   for k in ("name", "require_mfa") if getattr(before, k) != getattr(org, k)}
        await audit.record(tx, audit.context_of(request), AuditAction.ORG_UPDATED,
                           resource_type="org",
                           resource_id=org_id, details=changes)
    return json_response(org)


@routes.get("/api/v1/org/members")
@require_permission(Permission.MEMBERS_READ)
@doc("The org's members, in the order they joined", response=MemberListSchema)
async def list_members(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        found = await members.list_page(tx, org_id, page.after, page.limit + 1)
    return json_response(listing(found, len(found), page, key="joined_at", id_key="user_id"))


@routes.post("/api/v1/org/invitations")
@require_org_admin
@require_write
@step_up
@doc("Invite someone by mail", request=InvitationCreateSchema, response=InvitationSchema,
     status=201)
async def create_invitation(request: web.Request) -> web.Response:
    body = await load_body(request, InvitationCreateSchema)
    acting = caller.member(request)
    org_id = acting.org_id
    app = request.app
    async with org_tx(request) as tx:
        await check_refs(tx, org_id, body["role_ids"], body["group_ids"])
        if await members.has_member_with_email(tx, org_id, body["email"]):
            raise Conflict("This person is already a member.", code="already_member")
        await _lock_inviter(tx, org_id, acting.user_id)
        # Inviting an address again replaces its open invitation: the old link dies.
        await audit_revoked(tx, audit.context_of(request), await invitations.supersede(
            tx, org_id, body["email"], acting.user_id), RevokeReason.SUPERSEDED)
        created = await invitations.insert(
            tx, org_id, body["email"], OrgRole(body["org_role"]), body["role_ids"],
            body["group_ids"], acting.user_id, app[keys.CONFIG].mail_token_ttl_seconds)
        if created is None:
            raise Conflict("An invitation to this address was just sent.",
                           code="invitation_pending")
        invitation, token = created
        org = await orgs.get(tx, org_id)
        assert org is not None
        await audit.record(tx, audit.context_of(request), AuditAction.MEMBER_INVITED,
                           resource_type="invitation",
                           resource_id=invitation.id, details={
                               "email": invitation.email, "org_role": invitation.org_role,
                               "role_ids": [str(r) for r in invitation.role_ids],
                               "group_ids": [str(g) for g in invitation.group_ids]})
    await app[keys.MAILER].send_invitation(invitation.email, org.name, token)
    return json_response(invitation, status=201,
                         location=f"/api/v1/org/invitations/{invitation.id}")


async def _lock_inviter(tx: Tx, org_id: UUID, user_id: UUID) -> None:
    """The caller is still an administrator, and stays one until this transaction ends:
    a demotion or removal racing this invitation then waits, and revokes it."""
    if not await members.lock_administrator(tx, org_id, user_id):
        raise Forbidden("Organisation administrators only.", code="org_admin_required")


@routes.get("/api/v1/org/invitations")
@require_org_admin
@doc("Pending invitations (not accepted, revoked or expired), newest first",
     query=PageQuerySchema, response=InvitationListSchema)
async def list_invitations(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        found = await invitations.list_pending(tx, org_id, page.after, page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.delete("/api/v1/org/invitations/{invitation_id}")
@require_org_admin
@require_write
@step_up_exempt("withdrawing an invitation grants nothing")
@doc("Revoke a pending invitation: its link then answers 400 invalid_token; 404 for one "
     "that is not pending", status=204)
async def revoke_invitation(request: web.Request) -> web.Response:
    invitation_id = uuid_param(request, "invitation_id")
    acting = caller.member(request)
    org_id = acting.org_id
    async with org_tx(request) as tx:
        invitation = await invitations.revoke(tx, org_id, invitation_id, acting.user_id)
        if invitation is None:
            raise NotFound("No such pending invitation.")
        await audit_revoked(tx, audit.context_of(request), [invitation], RevokeReason.REVOKED)
    return web.Response(status=204)


async def _member_or_404(tx: Tx, org_id: UUID, user_id: UUID) -> members.Member:
    member = await members.get(tx, org_id, user_id)
    if member is None:
        raise NotFound("No such member.")
    return member


def _refuse_last_admin(admins: list[UUID], user_id: UUID) -> None:
    if admins == [user_id]:
        raise Conflict("An organisation needs at least one administrator.",
                       code="last_administrator")


@routes.patch("/api/v1/org/members/{user_id}")
@require_org_admin
@require_write
@step_up
@doc("Change a member's org role", request=MemberPatchSchema, response=MemberSchema)
async def update_member(request: web.Request) -> web.Response:
    user_id = uuid_param(request, "user_id")
    body = await load_body(request, MemberPatchSchema)
    acting = caller.member(request)
    org_id = acting.org_id
    new_role = OrgRole(body["org_role"])
    async with org_tx(request) as tx:
        admins = await members.lock_administrators(tx, org_id)
        before = await _member_or_404(tx, org_id, user_id)
        if new_role is not OrgRole.ADMINISTRATOR:
            _refuse_last_admin(admins, user_id)
        await members.set_org_role(tx, org_id, user_id, new_role)
        after = await _member_or_404(tx, org_id, user_id)
        await audit.record(tx, audit.context_of(request), AuditAction.MEMBER_UPDATED,
                           resource_type="member",
                           resource_id=user_id, details={
                               "org_role": {"from": before.org_role, "to": after.org_role}})
        if new_role is not OrgRole.ADMINISTRATOR:
            await revoke_with_inviter(tx, audit.context_of(request), org_id, user_id,
                                      acting.user_id,
                                      RevokeReason.INVITER_DEMOTED)
    return json_response(after)


@routes.delete("/api/v1/org/members/{user_id}")
@require_org_admin
@require_write
@step_up  # a stale administrator token could remove the other administrators
@doc("Remove a member: their tokens for this org die at once", status=204)
async def remove_member(request: web.Request) -> web.Response:
    user_id = uuid_param(request, "user_id")
    acting = caller.member(request)
    org_id = acting.org_id
    async with org_tx(request) as tx:
        admins = await members.lock_administrators(tx, org_id)
        member = await _member_or_404(tx, org_id, user_id)
        _refuse_last_admin(admins, user_id)
        await members.remove(tx, org_id, user_id)
        await audit.record(tx, audit.context_of(request), AuditAction.MEMBER_REMOVED,
                           resource_type="member",
                           resource_id=user_id, details={
                               "email": member.email, "org_role": member.org_role,
                               "roles": [r["name"] for r in member.roles]})
        await revoke_with_inviter(tx, audit.context_of(request), org_id, user_id, acting.user_id,
                                  RevokeReason.INVITER_REMOVED)
    return web.Response(status=204)


@routes.put("/api/v1/org/members/{user_id}/roles")
@require_org_admin
@require_write
@step_up
@doc("Set a member's directly held roles", request=RoleIdsSchema, response=MemberSchema)
async def set_member_roles(request: web.Request) -> web.Response:
    user_id = uuid_param(request, "user_id")
    body = await load_body(request, RoleIdsSchema)
    org_id = caller.member(request).org_id
    role_ids = list(dict.fromkeys(body["role_ids"]))
    async with org_tx(request) as tx:
        before = await _member_or_404(tx, org_id, user_id)
        await check_refs(tx, org_id, role_ids)
        await roles.set_for_member(tx, org_id, user_id, role_ids)
        after = await _member_or_404(tx, org_id, user_id)
        await audit.record(tx, audit.context_of(request), AuditAction.ROLE_ASSIGNED,
                           resource_type="member",
                           resource_id=user_id, details={
                               "roles": {"from": _names(before.roles),
                                         "to": _names(after.roles)}})
    return json_response(after)


def _names(refs: tuple[dict[str, Any], ...]) -> list[str]:
    return [str(r["name"]) for r in refs]
