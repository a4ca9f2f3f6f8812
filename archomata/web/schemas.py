"""Shapes shared across resources."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from archomata.web.text import EmailText, Text

Name = Text(required=True, validate=validate.Length(1, 200))
Email = EmailText(required=True, validate=validate.Length(3, 254))


class UserSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    email_verified = fields.Boolean(required=True)
    platform_role = fields.String(required=True)
    disabled = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)


class OrgSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    disabled = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    require_mfa = fields.Boolean(required=True)


class MemberOrgSchema(OrgSchema):
    org_role = fields.String(required=True)
