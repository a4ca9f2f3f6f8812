"""Query and path parameters under the text rules (archomata.text_rules).

Every parameter is single-line: a NUL, another control character, a tab or a line break
in a name or value is a 422 naming the parameter, before a handler (or PostgreSQL) sees
it. Bodies are checked by the JSON reader and the schemas' `Text` fields.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata.access import caller
from archomata.access.guards import access_rule
from archomata.errors import ValidationFailed
from archomata.text_rules import text_problem


def parameter_problems(request: web.Request) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    for name, value in request.query.items():
        if text_problem(name, multiline=False):
            problems["_query"] = ["A parameter name must be one line, without control "
                                  "characters or tabs."]
        else:
            problem = text_problem(value, multiline=False)
            if problem:
                problems.setdefault(name, []).append(problem)
    for name, value in request.match_info.items():
        problem = text_problem(value, multiline=False)
        if problem:
            problems[name] = [problem]
    return problems


def _anonymous_on_a_guarded_route(request: web.Request) -> bool:
    rule = access_rule(request.match_info.handler)
    return caller.caller_if_any(request) is None and rule is not None and rule.kind != "public"


@web.middleware
async def params_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # An anonymous caller of a guarded route hears its 401 first, whatever it sent; the
    # guard refuses it before any handler reads a parameter.
    if _anonymous_on_a_guarded_route(request):
        return await handler(request)
    problems = parameter_problems(request)
    if problems:
        raise ValidationFailed("A query or path parameter is invalid.", errors=problems)
    return await handler(request)
