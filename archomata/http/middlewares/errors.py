"""Turns every failure into RFC 9457 problem+json with a stable `code`.

ApiErrors are rendered as they are; aiohttp's own HTTP errors (unknown route, wrong
method, body over the size limit) are mapped by status; anything else is logged with the
request id and answered 500 with no internals.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata import errors, keys
from archomata.access.route_policy import policy_of
from archomata.metrics import METRICS
from archomata.web.problems import problem_response
from archomata.web.routing import route_name

log = logging.getLogger("archomata.errors")

_CODES_BY_STATUS = {
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "This method is not allowed on this resource."),
    413: ("payload_too_large", "The request body is too large."),
}


def _from_http_exception(exc: web.HTTPException) -> errors.ApiError:
    code, detail = _CODES_BY_STATUS.get(exc.status, (None, None))
    error = errors.for_status(exc.status, detail)
    if code:
        error.code = code
    if exc.status == 405 and "Allow" in exc.headers:
        error.headers["Allow"] = exc.headers["Allow"]
    return error


def _count_refusal(request: web.Request, refused: errors.RateLimited) -> None:
    """By the limit that refused; the per-client-IP ones by the route's rate class."""
    rate = policy_of(request).rate
    request.app[METRICS].ratelimit_refusals(refused.bucket or (rate.value if rate else "other"))


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiError as exc:
        if isinstance(exc, errors.RateLimited):
            _count_refusal(request, exc)
        return problem_response(exc, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and other non-errors pass through as aiohttp made them
        return problem_response(_from_http_exception(exc), request)
    except Exception:
        log.exception("unhandled error", extra={"request_id": request.get(keys.REQUEST_ID),
                                                "route": route_name(request)})
        return problem_response(errors.InternalError("An unexpected error occurred."), request)


