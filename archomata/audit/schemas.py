"""The audit log's query strings and answers, as the routes validate and document them."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from archomata.audit.export_formats import ExportFormat
from archomata.web.pagination import PageQuerySchema

# A `+` in a query string arrives as a space: "2025-01-01T00:00:00 02:00" meant +02:00.
_OFFSET_AS_SPACE = re.compile(r" (\d\d(:?\d\d)?)$")


class AuditLogQuerySchema(Schema):
    actor_id = fields.UUID()
    action = fields.String(validate=validate.Length(1, 100))
    resource_type = fields.String(validate=validate.Length(1, 100))
    resource_id = fields.String(validate=validate.Length(1, 200))
    since = fields.AwareDateTime(data_key="from", default_timezone=UTC,
                                 metadata={"description": "RFC 3339; entries at or after it"})
    until = fields.AwareDateTime(data_key="to", default_timezone=UTC,
                                 metadata={"description": "RFC 3339; entries before it"})
    q = fields.String(validate=validate.Length(1, 200), metadata={"description": (
        "Words, all of which must appear in the action, the resource type or id, or a "
        "value in details; whole words, case-insensitive. Words are split at white space "
        "and punctuation other than `_`, `-` and `:` (an email gives its parts). Several "
        "words need `from` and `to`, at most 31 days apart (422 naming the one missing).")})

    @pre_load
    def _plus_in_offsets(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {k: _OFFSET_AS_SPACE.sub(r"+\1", v) if k in ("from", "to") and
                isinstance(v, str) else v for k, v in data.items()}

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise ValidationError("Must be later than `from`.", "to")


class AdminAuditLogQuerySchema(AuditLogQuerySchema):
    org_id = fields.UUID()


class AuditLogPageSchema(PageQuerySchema, AuditLogQuerySchema):
    """The list's query as documented: page_of takes limit and cursor itself."""


class AdminAuditLogPageSchema(PageQuerySchema, AdminAuditLogQuerySchema):
    """The platform list's query as documented."""


class ExportQuerySchema(AuditLogQuerySchema):
    # CSV unless asked: what a spreadsheet opens (API.md names no default).
    format = fields.String(load_default=ExportFormat.CSV.value,
                           validate=validate.OneOf([f.value for f in ExportFormat]))


class AuditEntrySchema(Schema):
    id = fields.UUID(required=True)
    occurred_at = fields.DateTime(required=True)
    org_id = fields.UUID(allow_none=True, required=True)
    actor_type = fields.String(required=True)
    actor_id = fields.UUID(allow_none=True, required=True)
    action = fields.String(required=True)
    resource_type = fields.String(allow_none=True, required=True)
    resource_id = fields.String(allow_none=True, required=True)
    ip = fields.String(allow_none=True, required=True)
    user_agent = fields.String(allow_none=True, required=True)
    request_id = fields.String(allow_none=True, required=True)
    details = fields.Dict(required=True)
    seq = fields.Integer(required=True, metadata={
        "description": "Position in the org's hash chain: orders the org's entries"})


class AuditEntryListSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
