"""Bodies of the organisation, member, role and group routes."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from archomata.tenancy.org_role import OrgRole
from archomata.web.schemas import Email
from archomata.web.text import Text

OrgRoleField = Text(required=True, validate=validate.OneOf([r.value for r in OrgRole]))
IdList = fields.List(fields.UUID(), validate=validate.Length(max=100), load_default=list)


class OrgPatchSchema(Schema):
    name = Text(validate=validate.Length(1, 200))
    require_mfa = fields.Boolean()


class RefSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)


class MemberSchema(Schema):
    user_id = fields.UUID(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    org_role = fields.String(required=True)
    roles = fields.List(fields.Nested(RefSchema), required=True)
    groups = fields.List(fields.Nested(RefSchema), required=True)
    joined_at = fields.DateTime(required=True)


class MemberListSchema(Schema):
    items = fields.List(fields.Nested(MemberSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class InvitationCreateSchema(Schema):
    email = Email
    org_role = Text(load_default=OrgRole.MEMBER.value,
                             validate=validate.OneOf([r.value for r in OrgRole]))
    role_ids = IdList
    group_ids = IdList


class InvitationSchema(Schema):
    id = fields.UUID(required=True)
    org_id = fields.UUID(required=True)
    email = fields.String(required=True)
    org_role = fields.String(required=True)
    role_ids = fields.List(fields.UUID(), required=True)
    group_ids = fields.List(fields.UUID(), required=True)
    invited_by = fields.UUID(required=True, allow_none=True)
    expires_at = fields.DateTime(required=True)
    created_at = fields.DateTime(required=True)


class InvitationListSchema(Schema):
    items = fields.List(fields.Nested(InvitationSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class AcceptInvitationSchema(Schema):
    token = Text(required=True, validate=validate.Length(1, 200))
    name = Text(validate=validate.Length(1, 200))
    password = Text(multiline=True, validate=validate.Length(1, 1024))


class MemberPatchSchema(Schema):
    org_role = OrgRoleField


class RoleIdsSchema(Schema):
    role_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(max=100))


class UserIdsSchema(Schema):
    user_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(max=1000))


class GroupCreateSchema(Schema):
    name = Text(required=True, validate=validate.Length(1, 200))
    description = Text(multiline=True, load_default="", validate=validate.Length(max=2000))


class GroupPatchSchema(Schema):
    name = Text(validate=validate.Length(1, 200))
    description = Text(multiline=True, validate=validate.Length(max=2000))


class GroupSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True)
    members = fields.List(fields.Nested(RefSchema), required=True)
    roles = fields.List(fields.Nested(RefSchema), required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class GroupListSchema(Schema):
    items = fields.List(fields.Nested(GroupSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
