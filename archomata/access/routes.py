"""The system roles and the permission catalogue (the same for every org)."""

from __future__ import annotations

from aiohttp import web

from archomata.access import roles
from archomata.access.guards import authenticated
from archomata.access.schemas import PermissionListSchema, RoleListSchema
from archomata.db import org_tx
from archomata.web.json_io import json_response
from archomata.web.openapi import doc

routes = web.RouteTableDef()


@routes.get("/api/v1/roles")
@authenticated
@doc("The system roles with their permissions", response=RoleListSchema)
async def list_roles(request: web.Request) -> web.Response:
    async with org_tx(request) as tx:
        found = await roles.list_all(tx)
    return json_response({"items": found})


@routes.get("/api/v1/permissions")
@authenticated
@doc("The permission catalogue", response=PermissionListSchema)
async def list_permissions(request: web.Request) -> web.Response:
    async with org_tx(request) as tx:
        names = await roles.catalogue(tx)
    items = [{"name": n, "resource": n.split(":")[0], "action": n.split(":")[1]} for n in names]
    return json_response({"items": items})
