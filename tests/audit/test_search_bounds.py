"""A tenant's audit search cannot slow the others (GET /audit-logs `q`): several words
need a window, each person has a search budget, a search stops at a candidate cap or a
statement timeout, and eight searches at once over a large log leave another org's GET
/org within 2x of idle. Against a real `archomata serve` process on a database of its
own, filled as the owner with bench/audit_search.py's generate_series."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest

from archomata.audit import search_gate, service, store
from bench.audit_search import SEARCHERS, compare, fill
from tests.conftest import environ_for, make_database
from tests.factories import Session, login, member_with_roles, signed_up
from tests.serving import Served, serve

LIST = "/api/v1/audit-logs"
EXPORT = "/api/v1/audit-logs/export?format=csv"
# A million entries (the figure, and bench/audit_search.py's) take three to four
# minutes to write on this shared 2-core machine (200,000 took 43 s). Past the candidate
# cap the load a search makes is the same at any size (it stops after CANDIDATE_CAP
# candidates), so 100,000 (five times the cap) shows the same thing and keeps this test
# near a minute; ARCHOMATA_TEST_SEARCH_ENTRIES=1000000 runs the figure.
ENTRIES = int(os.environ.get("ARCHOMATA_TEST_SEARCH_ENTRIES", "100000"))


def window(days: int = 25) -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(days=days - 1)).isoformat(),
            "to": (now + timedelta(days=1)).isoformat()}


@dataclass
class Stack:
    served: Served
    session: aiohttp.ClientSession  # relative paths to the served process
    owner: asyncpg.Connection
    owner_url: str


@pytest.fixture
async def stack(postgres: Any, redis_server: Any, mail_sink: Any,
                tmp_path: Path) -> AsyncIterator[Stack]:
    urls = await make_database(postgres, "audit_search_bounds")
    served = await serve(environ_for(urls, redis_server.url, mail_sink.port), tmp_path)
    owner = await asyncpg.connect(urls.owner)
    session = aiohttp.ClientSession(base_url=served.url)
    try:
        yield Stack(served, session, owner, urls.owner)
    finally:
        await session.close()
        await owner.close()
        await served.ended()


async def search(session: aiohttp.ClientSession, who: Session,
                 **query: str) -> aiohttp.ClientResponse:
    response = await session.get(f"{LIST}?{urlencode(query)}", headers=who.auth)
    await response.read()
    return response


class TestSearchBounds:
    async def test_eight_searches_over_a_large_log_leave_another_orgs_get_within_2x(
            self, stack: Stack, mail_sink: Any) -> None:
        served, session, owner = stack.served, stack.session, stack.owner
        searcher, bystander = (await signed_up(session, mail_sink),
                               await signed_up(session, mail_sink))
        assert searcher.org_id is not None
        started = time.monotonic()
        await fill(stack.owner_url, searcher.org_id, ENTRIES)
        print(f"{ENTRIES:,} entries written in {time.monotonic() - started:.1f} s")
        people = [searcher] + [await member_with_roles(session, mail_sink, owner,
                                                       searcher.org_id, ["Risk Manager"])
                               for _ in range(SEARCHERS - 1)]
        # Robust on a machine shared with other runs, and honest: each attempt compares
        # medians taken moments apart; one attempt within 2x passes, three outside fail.
        ratios = []
        for _ in range(3):
            idle, loaded, seen = await compare(served.url, [p.auth for p in people],
                                               bystander.auth, requests=60)
            ratios.append(loaded / idle)
            print(f"another org's GET /org: {idle:.1f} ms idle, {loaded:.1f} ms under "
                  f"{SEARCHERS} searches ({loaded / idle:.2f}x); searches: {dict(seen)}")
            assert set(seen) <= {"200", "503 search_too_broad", "503 searches_busy",
                                 "429 too_many_searches"}, seen
            assert seen["503 search_too_broad"] >= SEARCHERS, seen  # the searches ran
            if loaded <= 2 * idle:
                break
        assert min(ratios) <= 2, ratios

    async def test_a_search_that_reaches_the_cap_is_a_503_and_a_narrower_one_answers(
            self, stack: Stack, mail_sink: Any) -> None:
        session = stack.session
        admin = await signed_up(session, mail_sink)
        assert admin.org_id is not None
        await fill(stack.owner_url, admin.org_id, store.CANDIDATE_CAP * 3)
        broad = await search(session, admin, q="alpha bravo", **window())
        assert broad.status == 503
        body = await broad.json()
        assert (body["code"], broad.content_type) == ("search_too_broad",
                                                      "application/problem+json")
        # One word: the first page at once. Both words in a day's window: under the cap.
        assert (await search(session, admin, q="alpha")).status == 200
        narrow = await search(session, admin, q="alpha bravo", **window(days=1))
        assert narrow.status == 200, await narrow.text()

    async def test_a_person_past_the_search_budget_gets_429_with_retry_after(
            self, stack: Stack, mail_sink: Any) -> None:
        session, owner = stack.session, stack.owner
        admin = await signed_up(session, mail_sink)
        colleague = await member_with_roles(session, mail_sink, owner, admin.org_id,
                                            ["Risk Manager"])
        budget = search_gate.SEARCHES_PER_USER.limit
        answers = await asyncio.gather(*(search(session, admin, q="registered")
                                         for _ in range(budget + 5)))
        assert sorted(r.status for r in answers) == [200] * budget + [429] * 5
        refused = next(r for r in answers if r.status == 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await refused.json())["code"] == "too_many_searches"
        # Per person: a colleague still searches, and a listing without `q` is not counted.
        assert (await search(session, colleague, q="registered")).status == 200
        assert (await search(session, admin, action="user.registered")).status == 200

    async def test_several_words_without_from_or_to_answer_422_naming_it(
            self, stack: Stack, mail_sink: Any) -> None:
        session = stack.session
        admin = await signed_up(session, mail_sink)
        span = window()
        for query, named in (({}, "from"), ({"from": span["from"]}, "to"),
                             ({"to": span["to"]}, "from"),
                             (window(days=40), "to")):
            response = await search(session, admin, q="user registered", **query)
            assert response.status == 422, query
            assert list((await response.json())["errors"]) == [named], query
        assert (await search(session, admin, q="registered")).status == 200  # one word
        assert (await search(session, admin, q="user registered", **span)).status == 200


class TestSearchTimeout:
    async def test_a_search_past_its_statement_timeout_is_a_504_problem(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        admin = await signed_up(client, mail_sink)
        monkeypatch.setattr(service, "SEARCH_TIMEOUT_MS", 50)
        # The words' counts made slow: the statement the timeout must cut.
        monkeypatch.setattr(store, "SEARCH_TERMS", store.SEARCH_TERMS.replace(
            "from unnest(", "from pg_sleep(1), unnest("))
        response = await client.get(f"{LIST}?q=registered", headers=admin.auth)
        assert response.status == 504
        assert response.content_type == "application/problem+json"
        assert (await response.json())["code"] == "search_timeout"
        monkeypatch.undo()
        assert (await client.get(f"{LIST}?q=registered", headers=admin.auth)).status == 200

    async def test_an_exports_search_is_bounded_as_a_search_is(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """The export of a search: its words looked up past the bound (a 500 before), and
        its first page past the bound (unbounded before), answer 504 problem+json; an
        export with no `q` is not a search and waits as long as it takes."""
        admin = await signed_up(client, mail_sink)
        monkeypatch.setattr(service, "SEARCH_TIMEOUT_MS", 50)
        slow_terms = store.SEARCH_TERMS.replace("from unnest(", "from pg_sleep(1), unnest(")
        slow_page = "select pg_sleep(1)"
        for attr, slowed in (("SEARCH_TERMS", slow_terms), ("ORDERED_WALK", slow_page)):
            with monkeypatch.context() as patch:
                patch.setattr(store, attr, slowed)
                response = await client.get(f"{EXPORT}&q=registered", headers=admin.auth)
                assert response.status == 504, (attr, await response.text())
                assert response.content_type == "application/problem+json"
                assert (await response.json())["code"] == "search_timeout"
        monkeypatch.setattr(store, "ORDERED_WALK", slow_page)
        plain = await client.get(EXPORT, headers=admin.auth)
        assert plain.status == 200 and b"user.registered" in await plain.read()

    async def test_an_exports_search_counts_against_the_persons_budget(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for _ in range(search_gate.SEARCHES_PER_USER.limit):
            assert (await client.get(f"{LIST}?q=registered", headers=admin.auth)
                    ).status == 200
        refused = await client.get(f"{EXPORT}&q=registered", headers=admin.auth)
        assert refused.status == 429
        assert (await refused.json())["code"] == "too_many_searches"
        assert (await client.get(EXPORT, headers=admin.auth)).status == 200  # no `q`


class TestCandidateCap:
    async def test_a_page_filled_before_the_cap_answers_with_its_cursor(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """The cap refuses a search that has not filled its page by then; one whose page
        is full (the row past the cap then only says more may follow) answers the page
        and its cursor."""
        admin = await signed_up(client, mail_sink)
        for _ in range(3):
            await login(client, admin.email, admin.password)
        monkeypatch.setattr(store, "CANDIDATE_CAP", 2)
        query = {"q": "auth succeeded", "limit": "2", **window()}
        full = await client.get(LIST, params=query, headers=admin.auth)
        assert full.status == 200, await full.text()
        body = await full.json()
        assert [e["action"] for e in body["items"]] == ["auth.login.succeeded"] * 2
        assert body["next_cursor"]
        # A page the cap leaves short is refused, as before.
        short = await client.get(LIST, params={**query, "limit": "3"}, headers=admin.auth)
        assert short.status == 503
