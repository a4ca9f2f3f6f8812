"""Shapes of the SSO routes and of the caller's linked identities."""

from __future__ import annotations

from marshmallow import Schema, fields


class SsoLoginQuerySchema(Schema):
    next = fields.String(load_default="/", metadata={
        "description": "Where the SPA goes after signing in: a path of the frontend "
                       "(`/dashboard?tab=1`); absolute URLs, `//host` and `/\\host` are "
                       "refused."})


class SsoCallbackQuerySchema(Schema):
    code = fields.String(metadata={"description": "The provider's authorization code"})
    state = fields.String(required=True, metadata={
        "description": "The state this service sent, single use, bound to the browser"})
    error = fields.String(metadata={"description": "The provider's refusal, if any"})


class IdentitySchema(Schema):
    id = fields.UUID(required=True)
    provider = fields.String(required=True, metadata={"enum": ["google", "azure"]})
    email = fields.String(required=True, allow_none=True)
    linked_at = fields.DateTime(required=True)


class IdentityListSchema(Schema):
    items = fields.List(fields.Nested(IdentitySchema), required=True)
