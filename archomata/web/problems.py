"""Renders an ApiError as an RFC 9457 problem+json response."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from archomata import keys
from archomata.errors import ApiError

PROBLEM_JSON = "application/problem+json"


def problem_body(error: ApiError, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "code": error.code,
        "detail": error.detail,
        "request_id": request_id,
    }
    if error.errors is not None:
        body["errors"] = error.errors
    return body


def problem_response(error: ApiError, request: web.Request) -> web.Response:
    body = problem_body(error, request.get(keys.REQUEST_ID))
    response = web.Response(
        text=json.dumps(body), status=error.status, content_type=PROBLEM_JSON,
        charset="utf-8", headers=error.headers,
    )
    return response
