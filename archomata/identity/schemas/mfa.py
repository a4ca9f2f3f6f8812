"""Bodies of the second-factor routes (/auth/mfa/verify, /me/mfa*)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from archomata.web.text import Text

Code = Text(validate=validate.Length(1, 16))
RecoveryCode = Text(validate=validate.Length(1, 64))


class _OneFactor(Schema):
    code = Code
    recovery_code = RecoveryCode

    @validates_schema
    def one_of_them(self, data: dict[str, Any], **_: Any) -> None:
        if ("code" in data) == ("recovery_code" in data):
            raise ValidationError("Give `code` or `recovery_code`.", "_body")


class MfaVerifySchema(_OneFactor):
    mfa_token = Text(required=True, validate=validate.Length(1, 200))


class StepUpSchema(_OneFactor):
    pass


class CurrentPasswordSchema(Schema):
    current_password = Text(multiline=True, required=True, validate=validate.Length(1, 1024))


class TotpStartedSchema(Schema):
    secret = fields.String(required=True)
    otpauth_uri = fields.String(required=True)


class CodeSchema(Schema):
    code = Text(required=True, validate=validate.Length(1, 16))


class RecoveryCodesSchema(Schema):
    recovery_codes = fields.List(fields.String(), required=True)


class TotpStatusSchema(Schema):
    enabled = fields.Boolean(required=True)
    confirmed_at = fields.DateTime(allow_none=True, required=True)


class MfaStatusSchema(Schema):
    totp = fields.Nested(TotpStatusSchema, required=True)
    recovery_codes_left = fields.Integer(required=True)


class MfaRequiredSchema(Schema):
    mfa_required = fields.Boolean(required=True)
    mfa_token = fields.String(required=True)
    methods = fields.List(fields.String(), required=True)
