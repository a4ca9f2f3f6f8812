"""Bodies of the role and permission catalogue routes (archomata.access.routes)."""

from __future__ import annotations

from marshmallow import Schema, fields


class RoleSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    permissions = fields.List(fields.String(), required=True)


class RoleListSchema(Schema):
    items = fields.List(fields.Nested(RoleSchema), required=True)


class PermissionSchema(Schema):
    name = fields.String(required=True)
    resource = fields.String(required=True)
    action = fields.String(required=True)


class PermissionListSchema(Schema):
    items = fields.List(fields.Nested(PermissionSchema), required=True)
