"""Hostile values to every route of the OpenAPI document, and never a 5xx (issue 11, 9).

Hypothesis draws, per operation, requests whose path parameters, query parameters and
body fields (following the body's schema, nested objects and arrays too) hold NUL and
other controls, line breaks, integers past 64 bits, deep nesting, long strings, wrong
types and Unicode oddities, or a whole body that is one of those. The callers are an
org administrator (so the guards pass), a platform administrator for /admin, and an
agent for the bridge. A few examples per operation keep it to seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from archomata import keys
from archomata.app import create_app
from archomata.config import Config, RateLimit
from tests.factories import agent_with_key, login, platform_admin, register, trading_account

# A few seconds in `make test`; ARCHOMATA_FUZZ_EXAMPLES=200 for a longer hunt.
EXAMPLES_PER_OPERATION = int(os.environ.get("ARCHOMATA_FUZZ_EXAMPLES", "15"))


class Raw(bytes):
    """JSON text as written (what json.dumps cannot write: integers past 4300 digits)."""


ODD_TEXT = ["\x00", "a\x00b", "\x01\x08\x0b\x0c\x1f", "\x7f", "line\r\nBcc: x@y.test", "\t",
            "\u2028\u2029", "\x85\x9b", "\ud800", "\udfff\ud800", "\u202e\u200b\ufeff",
            "\U0001f600" * 50, "ǅ\u0345ß\ufb03", "%00", "../../etc/passwd", "' or 1=1 --",
            "x" * 300_000, "", " "]
HUGE_NUMBERS = [Raw(b"1" * 4301), Raw(b"-" + b"9" * 5000), Raw(b"%d" % 2**64),
                Raw(b"%d" % -(2**63 + 1)), Raw(b"1e400"), Raw(b"-0.0"), Raw(b"1e-400")]
WRONG_TYPES = [None, True, False, 0, -1, 1.5, 2**63 - 1, 2**64 - 1, [], {}, [None], {"": 1}]


def deep(levels: int) -> Raw:
    return Raw(b"[" * levels + b"]" * levels)


HOSTILE = st.one_of(
    st.sampled_from(ODD_TEXT), st.sampled_from(HUGE_NUMBERS), st.sampled_from(WRONG_TYPES),
    st.sampled_from([deep(63), deep(65), deep(1100), deep(5000)]),
    # No 1..30: a long poll would wait that many seconds.
    st.text(max_size=40), st.integers(max_value=0) | st.integers(min_value=31),
    st.floats(allow_nan=False),
)


def dumps(value: Any) -> bytes:
    """JSON with Raw parts spliced in as written."""
    raws: dict[str, Raw] = {}

    def mark(item: Any) -> Any:
        if isinstance(item, Raw):
            key = f"@@raw{len(raws)}@@"
            raws[key] = item
            return key
        if isinstance(item, dict):
            return {k: mark(v) for k, v in item.items()}
        if isinstance(item, list):
            return [mark(v) for v in item]
        return item

    text = json.dumps(mark(value)).encode()
    for key, raw in raws.items():
        text = text.replace(json.dumps(key).encode(), bytes(raw))
    return text


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def shaped(spec: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> Any:
    """A value in the schema's shape whose leaves are hostile, or hostile itself."""
    schema = _resolve(spec, schema)
    if depth > 3:
        return HOSTILE
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "object" in kinds and schema.get("properties"):
        properties = schema["properties"]
        return st.fixed_dictionaries(
            {}, optional={name: shaped(spec, sub, depth + 1)
                          for name, sub in properties.items()}) | HOSTILE
    if "array" in kinds and "items" in schema:
        return st.lists(shaped(spec, schema["items"], depth + 1), max_size=3) | HOSTILE
    return HOSTILE


@st.composite
def requests(draw: st.DrawFn, spec: dict[str, Any], operation: dict[str, Any],
             ids: list[str]) -> tuple[dict[str, str], dict[str, str], bytes | None]:
    path_values: dict[str, str] = {}
    query: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            path_values[parameter["name"]] = draw(
                st.sampled_from(ids) | st.sampled_from(ODD_TEXT[:12]) | st.text(max_size=20))
        elif parameter["in"] == "query" and draw(st.booleans()):
            value = draw(HOSTILE)
            query[parameter["name"]] = value if isinstance(value, str) else dumps(value).decode()
    body = None
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is not None:
        body = dumps(draw(shaped(spec, content["schema"])))
    return path_values, query, body


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Reads before writes, deletes and sign-outs last: a request that ends the caller's
    session or deletes its fixtures still runs, but after the others had their turn."""
    found = [(path, method.upper(), operation) for path, methods in spec["paths"].items()
             for method, operation in methods.items()]

    def order(item: tuple[str, str, dict[str, Any]]) -> tuple[int, str]:
        path, method, _ = item
        last = "logout" in path or method == "DELETE" or "disable" in path
        return (2 if last else 0 if method == "GET" else 1, path)

    yield from sorted(found, key=order)


async def _fixtures(client: TestClient, config: Config, mail_sink: Any) -> dict[str, Any]:
    email, password, _ = await register(client, mail_sink, org_name="Hostile Org")
    admin = await login(client, email, password)
    agent, api_key = await agent_with_key(client, admin)
    account = await trading_account(client, admin, agent_id=agent["id"])
    group = await (await client.post("/api/v1/groups", json={"name": "G"},
                                     headers=admin.auth)).json()
    strategy = await (await client.post("/api/v1/strategies", json={"name": "S"},
                                        headers=admin.auth)).json()
    ids = [account["id"], str(account["login"]), agent["id"], group["id"], strategy["id"],
           str(uuid.uuid4()), "1", "0", "-1", "google", str(2**64)]
    return {"email": email, "password": password, "api_key": api_key, "ids": ids,
            "admin": admin.auth,
            "platform": (await platform_admin(client, config)).auth}


class TestHostileInput:
    def test_no_route_answers_a_5xx_to_hostile_values(self, config: Config,
                                                      mail_sink: Any) -> None:
        loop = asyncio.new_event_loop()
        # Rate limits would answer 429 long before the fuzzing is through: not under test.
        config = dataclasses.replace(config, rate_limit_login=RateLimit(10**6, 60))
        client = TestClient(TestServer(create_app(config)), loop=loop,
                            cookie_jar=aiohttp.DummyCookieJar(loop=loop))
        try:
            loop.run_until_complete(client.start_server())
            spec = client.server.app[keys.OPENAPI]
            fixtures = loop.run_until_complete(_fixtures(client, config, mail_sink))
            failures: list[str] = []
            for path, method, operation in operations(spec):
                headers = loop.run_until_complete(_caller(client, fixtures, path, operation))
                _probe(loop, client, spec, path, method, operation, headers, fixtures["ids"],
                       failures)
            assert not failures, "\n".join(failures[:20])
        finally:
            loop.run_until_complete(client.close())
            loop.close()


async def _caller(client: TestClient, fixtures: dict[str, Any], path: str,
                  operation: dict[str, Any]) -> dict[str, str]:
    security = operation.get("security")
    if security == [{"apiKey": []}]:
        return {"X-API-Key": fixtures["api_key"]}
    if path.startswith("/api/v1/admin"):
        return fixtures["platform"]
    # A fresh session when an earlier operation signed the admin out (logins are rate
    # limited: not one per operation).
    async with client.get("/api/v1/me", headers=fixtures["admin"]) as response:
        if response.status == 401:
            fixtures["admin"] = (await login(client, fixtures["email"],
                                             fixtures["password"])).auth
    return fixtures["admin"]


def _probe(loop: asyncio.AbstractEventLoop, client: TestClient, spec: dict[str, Any],
           path: str, method: str, operation: dict[str, Any], headers: dict[str, str],
           ids: list[str], failures: list[str]) -> None:
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=requests(spec, operation, ids))
    def probe(request: tuple[dict[str, str], dict[str, str], bytes | None]) -> None:
        path_values, query, body = request
        url = path
        for name, value in path_values.items():
            url = url.replace("{" + name + "}", _quoted(value) or "%20")
        if query:
            url += "?" + "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in query.items())
        sent = dict(headers, **({"Content-Type": "application/json"} if body else {}))
        status, text = loop.run_until_complete(
            _send(client, method, url, body, sent))
        if status >= 500:
            failures.append(f"{method} {url} {query!r} {(body or b'')[:200]!r} -> {status} "
                            f"{text[:200]}")
            raise AssertionError(failures[-1])

    with contextlib.suppress(AssertionError):  # in `failures`: every operation has a turn
        probe()


def _quoted(value: str) -> str:
    """Percent-encoded UTF-8, lone surrogates too (as a client that does not check sends)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


async def _send(client: TestClient, method: str, url: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[int, str]:
    async with client.request(method, URL(url, encoded=True), data=body, headers=headers,
                              allow_redirects=False) as response:
        return response.status, await response.text(errors="replace")
