"""The OpenAPI 3.1 document, generated from the router and the marshmallow schemas.

Every `/api/v1` route appears by construction: the document walks the router, and a
handler's `@doc(...)` adds its summary and schemas. The access rule of each route (see
archomata.access.guards) becomes its security requirement and an `x-access` note.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from archomata import __version__

F = TypeVar("F", bound=Callable[..., Any])
DOC_ATTR = "__archomata_doc__"


# A route's answer: one schema, or several it may take (documented as `oneOf`).
Answer = type[Schema] | tuple[type[Schema], ...]


@dataclass(frozen=True, slots=True)
class RouteDoc:
    summary: str
    request: type[Schema] | None = None
    response: Answer | None = None
    status: int = 200
    query: type[Schema] | None = None
    many: bool = False
    problems: tuple[tuple[int, str], ...] = ()


def doc(summary: str, *, request: type[Schema] | None = None,
        response: Answer | None = None, status: int = 200,
        query: type[Schema] | None = None,
        problems: Mapping[int, str] | None = None) -> Callable[[F], F]:
    """`response`: a tuple when the route answers one of several shapes (login: a session,
    or a second factor to prove). `problems`: the statuses particular to this route, each
    with what it means (every route may answer any problem, documented as the default
    response)."""
    def decorate(handler: F) -> F:
        setattr(handler, DOC_ATTR, RouteDoc(summary, request, response, status, query,
                                            problems=tuple(sorted((problems or {}).items()))))
        return handler
    return decorate


class ProblemSchema(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    code = fields.String(required=True)
    detail = fields.String()
    request_id = fields.String(allow_none=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))


_PROBLEM = {"description": "Problem", "content": {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}

_LOCATION = {"description": "The path of the created resource", "required": True,
             "schema": {"type": "string", "format": "uri-reference"}}

_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "public": [],
    "agent": [{"apiKey": []}],
}


class Rule(Protocol):
    """A route's access rule as the document shows it (archomata.access.guards.AccessRule):
    who may call it (`x-access`) and with what credential (`security`)."""

    @property
    def kind(self) -> str: ...
    def describe(self) -> str: ...


def _operation(route: web.AbstractRoute,
               rule_of: Callable[[Any], Rule | None]) -> dict[str, Any]:
    handler = route.handler
    route_doc: RouteDoc | None = getattr(handler, DOC_ATTR, None)
    rule = rule_of(handler)
    operation: dict[str, Any] = {
        "operationId": getattr(handler, "__name__", "handler"),
        "summary": route_doc.summary if route_doc else getattr(handler, "__name__", ""),
        "responses": {"default": _PROBLEM},
    }
    if rule is not None:
        operation["x-access"] = rule.describe()
        operation["security"] = _SECURITY.get(rule.kind, [{"bearerAuth": []}])
    resource = route.resource
    path = resource.canonical if resource else ""
    params = [{"name": part[1:-1].split(":")[0], "in": "path", "required": True,
               "schema": {"type": "string"}}
              for part in path.split("/") if part.startswith("{")]
    if route_doc and route_doc.query:
        params.append({"in": "query", "schema": route_doc.query})
    if params:
        operation["parameters"] = params
    if route_doc and route_doc.request:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": route_doc.request}}}
    status = str(route_doc.status if route_doc else 200)
    if route_doc and route_doc.response:
        answer = route_doc.response
        schema = {"oneOf": list(answer)} if isinstance(answer, tuple) else answer
        operation["responses"][status] = {"description": "OK", "content": {
            "application/json": {"schema": schema}}}
    else:
        operation["responses"][status] = {"description": "OK"}
    if status == "201":  # archomata.web.json_io.json_response sets it on every 201
        operation["responses"][status]["headers"] = {"Location": _LOCATION}
    for code, meaning in route_doc.problems if route_doc else ():
        operation["responses"][str(code)] = {**_PROBLEM, "description": meaning}
    return operation


def build_spec(app: web.Application, rule_of: Callable[[Any], Rule | None]) -> dict[str, Any]:
    """The OpenAPI document of `app`'s /api/v1 routes; `rule_of` reads a handler's access
    rule (archomata.access.guards.access_rule, handed in by archomata.app)."""
    spec = APISpec(title="Archomata API", version=__version__, openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin()])
    spec.components.schema("Problem", schema=ProblemSchema)
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "bearerFormat": "JWT"})
    spec.components.security_scheme("apiKey", {"type": "apiKey", "in": "header",
                                               "name": "X-API-Key"})
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        resource = route.resource
        path = resource.canonical if resource is not None else ""
        if not path.startswith("/api/v1") or route.method in {"HEAD", "OPTIONS", "*"}:
            continue
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, rule_of)
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()
