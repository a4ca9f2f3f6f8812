"""Errors where a newcomer trips say what to do: a refresh with no cookie says why the
browser sent none, a bad query parameter is named as one, the audit export needs no
`format`, and every message naming a route names it in full (`/api/v1/...`).
(The busy port: tests/ops/test_busy_port.py; a refused CORS origin: tests/http/test_cors.py.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from archomata.access import step_up
from tests.factories import FRONTEND, signed_up

PACKAGE = Path(__file__).resolve().parents[1] / "archomata"
EXPORT = "/api/v1/audit-logs/export"
# A route of the API written without its base: `/auth/step-up`, `/me/mfa`, ...
SHORT_ROUTE = re.compile(
    r"(?<![\w/.:}-])/(auth|me|org|accounts|orders|agents|audit-logs|admin|bridge|groups|"
    r"strategies|roles|permissions|docs|openapi\.json)(?=[/\s.,;:)`'\"]|$)")


class TestRefreshWithoutCookie:
    async def test_it_keeps_the_contracts_code_and_says_why_no_cookie_came(
            self, client: Any) -> None:
        response = await client.post("/api/v1/auth/refresh", headers={"Origin": FRONTEND})
        assert response.status == 401
        problem = await response.json()
        assert problem["code"] == "session_revoked"  # API.md §3: the contract's code
        assert "No refresh cookie came" in problem["detail"]
        assert "only to the site" in problem["detail"]
        assert "localhost and 127.0.0.1 are different sites" in problem["detail"]


class TestAuditExportQuery:
    async def test_without_format_it_is_csv(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.get(EXPORT, headers=admin.auth)
        assert response.status == 200, await response.text()
        assert response.content_type == "text/csv"
        assert response.headers["Content-Disposition"].endswith('.csv"')
        await response.read()

    async def test_a_bad_format_is_named_as_a_query_parameter(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.get(EXPORT, params={"format": "xml"}, headers=admin.auth)
        assert response.status == 422
        problem = await response.json()
        assert problem["detail"] == "The query parameter format is invalid."
        assert "body" not in problem["detail"]
        assert list(problem["errors"]) == ["format"]

    async def test_several_bad_parameters_are_all_named(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.get("/api/v1/audit-logs", headers=admin.auth,
                                    params={"limit": "0", "actor_id": "nobody"})
        assert response.status == 422
        problem = await response.json()
        assert problem["detail"] in ("The query parameter limit is invalid.",
                                     "The query parameters actor_id, limit are invalid.",
                                     "The query parameter actor_id is invalid.")
        assert "body" not in problem["detail"]


class TestRoutesNamedInFull:
    def test_the_step_up_refusal_names_the_route_to_call(self) -> None:
        assert "POST /api/v1/auth/step-up" in step_up.step_up_refusal().detail

    def test_no_message_names_a_route_without_its_base(self) -> None:
        """Every string of the package but docstrings and comments: problem details,
        the OpenAPI summaries, log lines."""
        short: list[str] = []
        for path in sorted(PACKAGE.rglob("*.py")):
            tree = ast.parse(path.read_text())
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                        | ast.AsyncFunctionDef)
                          and node.body and isinstance(node.body[0], ast.Expr)
                          and isinstance(node.body[0].value, ast.Constant)}
            short += [f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}"
                      for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and SHORT_ROUTE.search(node.value)]
        assert short == []

    def test_the_scan_finds_a_short_route(self) -> None:
        assert SHORT_ROUTE.search("enrol one at /me/mfa.")
        assert SHORT_ROUTE.search("(POST /auth/step-up)")
        assert not SHORT_ROUTE.search("(POST /api/v1/auth/step-up)")
        assert not SHORT_ROUTE.search("/api/v1/accounts/{account_id}/orders")
