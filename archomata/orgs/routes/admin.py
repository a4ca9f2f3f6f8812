"""Platform administration of the orgs: every org, disabling and enabling them (the
users': archomata.identity.routes.admin_users)."""

from __future__ import annotations

import functools

from aiohttp import web
from marshmallow import Schema, fields

from archomata import audit
from archomata.access.guards import require_platform_admin
from archomata.access.step_up import step_up
from archomata.db import platform_tx
from archomata.identity.revocation import REVOCATION
from archomata.orgs import service
from archomata.tenancy import orgs
from archomata.web.json_io import json_response, uuid_param
from archomata.web.openapi import doc
from archomata.web.pagination import listing, page_of
from archomata.web.params import after
from archomata.web.schemas import OrgSchema

routes = web.RouteTableDef()


class OrgListSchema(Schema):
    items = fields.List(fields.Nested(OrgSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


@routes.get("/api/v1/admin/orgs")
@require_platform_admin
@doc("Every org, newest first", response=OrgListSchema)
async def list_orgs(request: web.Request) -> web.Response:
    page, _ = page_of(request)
    async with platform_tx(request) as tx:
        found = await orgs.list_page(tx, after(page),
                                     page.limit + 1)
    return json_response(listing(found, len(found), page))


async def _set_org_disabled(request: web.Request, disabled: bool) -> web.Response:
    org = await service.set_org_disabled(functools.partial(platform_tx, request),
                                         audit.context_of(request), request.app[REVOCATION],
                                         uuid_param(request, "org_id"), disabled)
    return json_response(org)


@routes.post("/api/v1/admin/orgs/{org_id}/disable")
@require_platform_admin
@step_up
@doc("Disable an org: its tokens, sessions and agent keys stop at once", response=OrgSchema)
async def disable_org(request: web.Request) -> web.Response:
    return await _set_org_disabled(request, True)


@routes.post("/api/v1/admin/orgs/{org_id}/enable")
@require_platform_admin
@step_up
@doc("Enable a disabled org", response=OrgSchema)
async def enable_org(request: web.Request) -> web.Response:
    return await _set_org_disabled(request, False)
