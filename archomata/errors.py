"""The errors a client can see, each with an HTTP status and a stable `code`.

    ApiError
     ├── BadRequest             400  malformed_json, json_too_deep, number_out_of_range,
     │                               invalid_token, ...
     ├── Unauthorized           401  not_authenticated, invalid_credentials, token_invalid,
     │                               session_revoked, org_disabled, ...
     ├── Forbidden              403  permission_denied, no_org, email_not_verified,
     │                               csrf_origin_mismatch, ...
     ├── NotFound               404  not_found
     ├── MethodNotAllowed       405  method_not_allowed
     ├── Conflict               409  conflict, last_administrator, position_closing, ...
     ├── PayloadTooLarge        413  payload_too_large
     ├── UnsupportedMediaType   415  unsupported_media_type
     ├── ValidationFailed       422  validation_failed (+ per-field `errors`)
     ├── RateLimited            429  rate_limited, too_many_exports (+ Retry-After)
     ├── InternalError          500  internal_error
     ├── ServiceUnavailable     503  service_unavailable, exports_busy,
     │                               secret_unavailable (archomata.sealed)
     └── GatewayTimeout         504  timeout

Handlers raise these; the errors middleware renders them as RFC 9457 problem+json.
Foreign errors (asyncpg, redis, marshmallow) are translated once, at the boundary that
meets them, with `raise ... from exc`: PostgreSQL's refusals (a unique violation is a 409
with the constraint's code, a value it cannot store a 422) at the transaction door,
archomata.db. A `detail` is shown to the client: it must never
hold a secret, SQL, a path or a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import ClassVar


class ApiError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        errors: Mapping[str, Sequence[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.detail = detail or HTTPStatus(self.status).description
        self.errors = {k: list(v) for k, v in errors.items()} if errors else None
        self.headers = dict(headers or {})
        super().__init__(f"{self.status} {self.code}: {self.detail}")

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class BadRequest(ApiError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    default_code = "not_authenticated"


class Forbidden(ApiError):
    status = 403
    default_code = "permission_denied"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    default_code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    default_code = "unsupported_media_type"


class ValidationFailed(ApiError):
    status = 422
    default_code = "validation_failed"


class RateLimited(ApiError):
    status = 429
    default_code = "rate_limited"

    def __init__(self, retry_after: int, detail: str | None = None, *,
                 code: str | None = None, bucket: str | None = None) -> None:
        super().__init__(detail or "Too many requests; retry later.", code=code,
                         headers={"Retry-After": str(max(1, retry_after))})
        # Which limit refused, for the refusals' metric (archomata.metrics): None for the
        # per-client-IP limits, which the route's rate class names.
        self.bucket = bucket


class InternalError(ApiError):
    status = 500
    default_code = "internal_error"


class ServiceUnavailable(ApiError):
    status = 503
    default_code = "service_unavailable"


class GatewayTimeout(ApiError):
    status = 504
    default_code = "timeout"


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
                PayloadTooLarge, UnsupportedMediaType, ValidationFailed, InternalError,
                ServiceUnavailable, GatewayTimeout)
}


def for_status(status: int, detail: str | None = None) -> ApiError:
    """The ApiError for a bare HTTP status (aiohttp's own 404, 405, 413...)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return BadRequest(detail) if 400 <= status < 500 else InternalError()
    return cls(detail)
