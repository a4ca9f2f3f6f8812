"""Groups of the caller's org: CRUD, members and the roles they grant."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import audit
from archomata.access import caller
from archomata.access.guards import require_org_admin, require_permission, require_write
from archomata.access.permissions import Permission
from archomata.access.step_up import step_up, step_up_exempt
from archomata.audit import AuditAction
from archomata.db import Tx, org_tx
from archomata.errors import Conflict, NotFound, ValidationFailed
from archomata.orgs.schemas import (
    GroupCreateSchema,
    GroupListSchema,
    GroupPatchSchema,
    GroupSchema,
    RoleIdsSchema,
    UserIdsSchema,
)
from archomata.orgs.service import check_refs
from archomata.orgs.store import groups, members
from archomata.web.json_io import json_response, load_body, uuid_param
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of

routes = web.RouteTableDef()


async def _group_or_404(tx: Tx, org_id: UUID, group_id: UUID) -> groups.Group:
    group = await groups.get(tx, org_id, group_id)
    if group is None:
        raise NotFound("No such group.")
    return group


def _taken(name: str) -> Conflict:
    return Conflict(f"A group named {name!r} already exists.", code="group_name_taken")


@routes.get("/api/v1/groups")
@require_permission(Permission.GROUPS_READ)
@doc("The org's groups", response=GroupListSchema)
async def list_groups(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        found = await groups.list_page(tx, org_id, page.after, page.limit + 1)
    return json_response(listing(found, len(found), page))


@routes.post("/api/v1/groups")
@require_org_admin
@require_write
@step_up_exempt("a new group has no members and no roles")
@doc("Create a group", request=GroupCreateSchema, response=GroupSchema, status=201)
async def create_group(request: web.Request) -> web.Response:
    body = await load_body(request, GroupCreateSchema)
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        group_id = await groups.insert(tx, org_id, body["name"], body["description"])
        if group_id is None:
            raise _taken(body["name"])
        group = await _group_or_404(tx, org_id, group_id)
        await audit.record(tx, audit.context_of(request), AuditAction.GROUP_CREATED,
                           resource_type="group",
                           resource_id=group_id, details={"name": group.name})
    return json_response(group, status=201, location=f"/api/v1/groups/{group.id}")


@routes.get("/api/v1/groups/{group_id}")
@require_permission(Permission.GROUPS_READ)
@doc("One group with its members and roles", response=GroupSchema)
async def get_group(request: web.Request) -> web.Response:
    group_id = uuid_param(request, "group_id")
    async with org_tx(request) as tx:
        group = await _group_or_404(tx, caller.member(request).org_id, group_id)
    return json_response(group)


@routes.patch("/api/v1/groups/{group_id}")
@require_org_admin
@require_write
@step_up_exempt("a group's name and description grant nothing")
@doc("Rename or describe a group", request=GroupPatchSchema, response=GroupSchema)
async def update_group(request: web.Request) -> web.Response:
    group_id = uuid_param(request, "group_id")
    body = await load_body(request, GroupPatchSchema)
    if not body:
        raise ValidationFailed("Nothing to change.", errors={"_body": ["Give a field."]})
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        before = await _group_or_404(tx, org_id, group_id)
        # A name taken, even by a rename racing this one, is the db's 409 group_name_taken.
        await groups.update(tx, org_id, group_id, body.get("name"), body.get("description"))
        after = await _group_or_404(tx, org_id, group_id)
        changes = {k: {"from": getattr(before, k), "to": getattr(after, k)}
                   for k in ("name", "description") if getattr(before, k) != getattr(after, k)}
        await audit.record(tx, audit.context_of(request), AuditAction.GROUP_UPDATED,
                           resource_type="group",
                           resource_id=group_id, details={"changes": changes})
    return json_response(after)


@routes.delete("/api/v1/groups/{group_id}")
@require_org_admin
@require_write
@step_up_exempt("deleting a group takes access away")
@doc("Delete a group; its members lose the roles it granted", status=204)
async def delete_group(request: web.Request) -> web.Response:
    group_id = uuid_param(request, "group_id")
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        group = await _group_or_404(tx, org_id, group_id)
        await groups.delete(tx, org_id, group_id)
        await audit.record(tx, audit.context_of(request), AuditAction.GROUP_DELETED,
                           resource_type="group",
                           resource_id=group_id, details={"name": group.name})
    return web.Response(status=204)


def _ids(refs: tuple[dict[str, Any], ...]) -> list[str]:
    return [str(r["id"]) for r in refs]


@routes.put("/api/v1/groups/{group_id}/members")
@require_org_admin
@require_write
@step_up
@doc("Set who is in a group", request=UserIdsSchema, response=GroupSchema)
async def set_group_members(request: web.Request) -> web.Response:
    group_id = uuid_param(request, "group_id")
    body = await load_body(request, UserIdsSchema)
    user_ids = list(dict.fromkeys(body["user_ids"]))
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        before = await _group_or_404(tx, org_id, group_id)
        strangers = await members.non_members(tx, org_id, user_ids)
        if strangers:
            raise ValidationFailed("Only members of the org can join its groups.", errors={
                "user_ids": [f"Not a member: {u}." for u in strangers]})
        await groups.set_members(tx, org_id, group_id, user_ids)
        after = await _group_or_404(tx, org_id, group_id)
        await audit.record(tx, audit.context_of(request), AuditAction.GROUP_MEMBERS_SET,
                           resource_type="group",
                           resource_id=group_id, details={
                               "members": {"from": _ids(before.members),
                                           "to": _ids(after.members)}})
    return json_response(after)


@routes.put("/api/v1/groups/{group_id}/roles")
@require_org_admin
@require_write
@step_up
@doc("Set the roles a group grants", request=RoleIdsSchema, response=GroupSchema)
async def set_group_roles(request: web.Request) -> web.Response:
    group_id = uuid_param(request, "group_id")
    body = await load_body(request, RoleIdsSchema)
    role_ids = list(dict.fromkeys(body["role_ids"]))
    org_id = caller.member(request).org_id
    async with org_tx(request) as tx:
        before = await _group_or_404(tx, org_id, group_id)
        await check_refs(tx, org_id, role_ids)
        await groups.set_roles(tx, org_id, group_id, role_ids)
        after = await _group_or_404(tx, org_id, group_id)
        await audit.record(tx, audit.context_of(request), AuditAction.GROUP_ROLES_SET,
                           resource_type="group",
                           resource_id=group_id, details={
                               "roles": {"from": [r["name"] for r in before.roles],
                                         "to": [r["name"] for r in after.roles]}})
    return json_response(after)
