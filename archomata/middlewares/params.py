"""Query and path parameters under the text rules (archomata.schemas.text).

Every parameter is single-line: a NUL, another control character, a tab or a line break
in a name or value is a 422 naming the parameter, before a handler (or PostgreSQL) sees
it. Bodies are checked by the JSON reader and the schemas' `Text` fields.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from archomata.errors import ValidationFailed
from archomata.schemas.text import text_problem


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


@web.middleware
async def params_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    problems = parameter_problems(request)
    if problems:
        raise ValidationFailed("A query or path parameter is invalid.", errors=problems)
    return await handler(request)
