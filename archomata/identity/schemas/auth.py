"""Bodies of the /auth routes."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from archomata.identity import new_password
from archomata.web.schemas import Email, MemberOrgSchema, Name, UserSchema
from archomata.web.text import Text


def password_to_set(name: str) -> Text:
    """The field of a password being set, named `name`: the one new-password check
    (its length, none of the breached ones: identity/new_password.py)."""
    return Text(multiline=True, required=True,
                validate=lambda value: new_password.check(value, name))


class RegisterSchema(Schema):
    email = Email
    password = password_to_set("password")
    name = Name
    org_name = Text(required=True, validate=validate.Length(1, 200))


class RegisteredSchema(Schema):
    user = fields.Nested(UserSchema, required=True)


class TokenSchema(Schema):
    token = Text(required=True, validate=validate.Length(1, 200))


class EmailOnlySchema(Schema):
    email = Text(required=True, validate=validate.Length(1, 254))


class LoginSchema(Schema):
    email = Text(required=True, validate=validate.Length(1, 254))
    password = Text(multiline=True, required=True, validate=validate.Length(1, 1024))
    org_id = fields.UUID(load_default=None)


class ResetConfirmSchema(Schema):
    token = Text(required=True, validate=validate.Length(1, 200))
    new_password = password_to_set("new_password")


class PasswordChangeSchema(Schema):
    current_password = Text(multiline=True, required=True, validate=validate.Length(1, 1024))
    new_password = password_to_set("new_password")


class SwitchOrgSchema(Schema):
    org_id = fields.UUID(required=True)


class LoginResultSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)
    user = fields.Nested(UserSchema, required=True)
    org = fields.Nested(MemberOrgSchema, allow_none=True, required=True)


class SessionSchema(Schema):
    id = fields.UUID(required=True)
    created_at = fields.DateTime(required=True)
    last_used_at = fields.DateTime(required=True)
    ip = fields.String(required=True)
    user_agent = fields.String(required=True)
    current = fields.Boolean(required=True)


class SessionListSchema(Schema):
    items = fields.List(fields.Nested(SessionSchema), required=True)
