"""docs/api.md, the API reference shipped in the repository, against the routes the
service serves: each named there is served (or listed under "Not served yet"), each
served is named there, and its contract text is the project's contract word for word."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archomata.app import create_app
from archomata.config import Config

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "api.md"
# The project's contract, beside the checkout where it is kept (CI lays it there too).
CONTRACT = REPO.parent / "shared" / "API.md"
BEGIN, END = "<!-- contract: begin -->\n", "<!-- contract: end -->\n"
NOT_SERVED = "### Not served yet"

Route = tuple[str, str]
METHOD = r"(?:GET|POST|PUT|PATCH|DELETE)"
# "GET, POST /strategies", "DELETE -> 204" (the path before it in the cell), with a
# `{body}` or `?query` after the path.
ENTRY = re.compile(rf"^\s*({METHOD}(?:\s*,\s*{METHOD})*)(?:\s+(/[^\s`?]*))?")


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _shape(path: str) -> str:
    """`/accounts/{id}` and `/accounts/{account_id}` are one route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def named_routes(text: str) -> set[Route]:
    """The routes the tables of `text` name: the first cell of each row of a table whose
    first column is `method path` (or `path`, in Operations), several in a cell split by
    `;`. Paths are under /api/v1 except under a heading that says "no base path"."""
    found: set[Route] = set()
    base, header = "/api/v1", None
    for line in text.splitlines():
        if line.startswith("#"):
            base, header = ("" if "no base path" in line else "/api/v1"), None
            continue
        if not line.startswith("|"):
            header = None
            continue
        first = _cells(line)[0]
        if header is None:
            header = first
            continue
        if header not in ("method path", "path") or set(first) <= set("-: "):
            continue
        path = None
        for entry in first.split(";"):
            match = ENTRY.match(entry)
            if match is None:
                continue
            path = match.group(2) or path
            if path is not None:
                full = path if path.startswith("/api/") else base + path
                found |= {(m, _shape(full)) for m in re.findall(METHOD, match.group(1))}
    return found


def served_routes(config: Config) -> set[Route]:
    app = create_app(config)
    return {(route.method, _shape(route.resource.canonical))
            for route in app.router.routes()
            if route.resource is not None and route.method not in ("HEAD", "OPTIONS")}


def sections() -> tuple[str, str]:
    """docs/api.md without its "Not served yet" section, and that section."""
    text = API_DOC.read_text()
    start = text.index(NOT_SERVED)
    after = re.search(r"^#{1,3} ", text[start + len(NOT_SERVED):], re.MULTILINE)
    end = start + len(NOT_SERVED) + after.start() if after else len(text)
    return text[:start] + text[end:], text[start:end]


class TestRoutes:
    def test_every_route_served_is_named_in_docs_api_md(self, config: Config) -> None:
        named, _ = sections()
        missing = served_routes(config) - named_routes(named)
        assert not missing, f"served, not in docs/api.md: {sorted(missing)}"

    def test_every_route_docs_api_md_names_is_served_or_said_not_to_be(
            self, config: Config) -> None:
        named, not_served = sections()
        unserved = named_routes(named) - named_routes(not_served) - served_routes(config)
        assert not unserved, f"in docs/api.md, not served: {sorted(unserved)}"

    def test_what_is_said_not_to_be_served_is_not(self, config: Config) -> None:
        _, not_served = sections()
        listed = named_routes(not_served)
        assert len(listed) >= 10  # the section was found and read
        served = listed & served_routes(config)
        assert not served, f"served now: remove from 'Not served yet': {sorted(served)}"

    def test_every_api_v1_route_is_in_the_openapi_document_too(self, config: Config) -> None:
        from archomata import keys

        app = create_app(config)
        documented = {(method.upper(), _shape(path))
                      for path, operations in app[keys.OPENAPI]["paths"].items()
                      for method in operations}
        api = {route for route in served_routes(config) if route[1].startswith("/api/v1")}
        assert api == documented

    def test_the_reader_reads_the_contracts_shapes(self) -> None:
        text = """### Trading
| method path | who |
|---|---|
| GET, POST /strategies; GET, PATCH, DELETE /strategies/{id} `{name}` | perm |
| PUT /org/trading-halt `{reason}` -> 200; DELETE -> 204 | perm |
| GET /audit-logs/export `?format=csv\\|jsonl` (streamed; at most 2) | perm |
| POST /orders/{id}/cancel -> 200; 409 once the agent has it | perm |

### Operations (no base path)
| path | result |
|---|---|
| GET /health/live | 200 |
"""
        assert named_routes(text) == {
            ("GET", "/api/v1/strategies"), ("POST", "/api/v1/strategies"),
            ("GET", "/api/v1/strategies/{}"), ("PATCH", "/api/v1/strategies/{}"),
            ("DELETE", "/api/v1/strategies/{}"), ("PUT", "/api/v1/org/trading-halt"),
            ("DELETE", "/api/v1/org/trading-halt"), ("GET", "/api/v1/audit-logs/export"),
            ("POST", "/api/v1/orders/{}/cancel"), ("GET", "/health/live")}


class TestContract:
    def test_docs_api_md_holds_the_contract_word_for_word(self) -> None:
        if not CONTRACT.exists():
            pytest.skip(f"no contract beside the checkout ({CONTRACT}) to compare with")
        text = API_DOC.read_text()
        shipped = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
        assert shipped == CONTRACT.read_text(), (
            "docs/api.md's contract differs from the project's: copy it again")

    def test_the_readme_points_at_docs_api_md(self) -> None:
        readme = (REPO / "README.md").read_text()
        assert "](docs/api.md)" in readme
        assert "../shared/" not in readme  # resolves in no clone
