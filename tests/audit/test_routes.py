"""GET /audit-logs, its export, and GET /admin/audit-logs: scope, filters, pages, CSV."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import asyncpg
import pytest

from archomata.app import create_app
from archomata.audit.export_formats import FIELDS
from archomata.config import Config, load_config
from tests.conftest import environ_for, make_database
from tests.factories import (
    FRONTEND,
    Session,
    login,
    member_with_roles,
    platform_admin,
    signed_up,
    unique_email,
)

LIST = "/api/v1/audit-logs"
EXPORT = "/api/v1/audit-logs/export"
ADMIN_LIST = "/api/v1/admin/audit-logs"


async def get(client: Any, session: Session, path: str, **query: Any) -> Any:
    url = f"{path}?{urlencode(query)}" if query else path
    response = await client.get(url, headers=session.auth)
    assert response.status == 200, await response.text()
    return await response.json()


async def every_page(client: Any, session: Session, path: str, cursor: str,
                     **query: Any) -> list[Any]:
    items: list[Any] = []
    while cursor is not None:
        page = await get(client, session, path, **query, cursor=cursor)
        items += page["items"]
        cursor = page["next_cursor"]
    return items


async def new_group(client: Any, admin: Session, name: str) -> dict[str, Any]:
    response = await client.post("/api/v1/groups", headers={**admin.auth, "Origin": FRONTEND},
                                 json={"name": name, "description": f"About {name}"})
    assert response.status == 201, await response.text()
    return await response.json()


async def rename_group(client: Any, admin: Session, group_id: str, name: str) -> None:
    response = await client.patch(f"/api/v1/groups/{group_id}", json={"name": name},
                                  headers={**admin.auth, "Origin": FRONTEND})
    assert response.status == 200, await response.text()


class TestOrgListing:
    async def test_an_org_sees_its_own_entries_newest_first_and_never_anothers(
            self, client: Any, mail_sink: Any) -> None:
        mine, theirs = await signed_up(client, mail_sink), await signed_up(client, mail_sink)
        await new_group(client, mine, "Alpha desk")
        secret = await new_group(client, theirs, "Beta desk")
        items = (await get(client, mine, LIST))["items"]
        assert {i["org_id"] for i in items} == {str(mine.org_id)}
        assert [i["action"] for i in items][:2] == ["group.created", "auth.login.succeeded"]
        assert items == sorted(items, key=lambda i: (i["occurred_at"], i["id"]), reverse=True)
        assert [i["seq"] for i in items] == sorted((i["seq"] for i in items), reverse=True)
        entry = items[0]
        assert set(entry) == set(FIELDS)
        assert entry["actor_type"] == "user"
        assert entry["actor_id"] == str(mine.user_id)
        assert entry["ip"] == "127.0.0.1"
        assert entry["request_id"]
        for probe in ({"resource_id": secret["id"]}, {"q": "beta"},
                      {"actor_id": str(theirs.user_id)}):
            assert (await get(client, mine, LIST, **probe))["items"] == []

    async def test_needs_audit_logs_read(self, client: Any, mail_sink: Any,
                                         owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        viewer = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])
        for path in (LIST, f"{EXPORT}?format=csv"):
            refused = await client.get(path, headers=viewer.auth)
            assert refused.status == 403
            assert (await refused.json())["code"] == "permission_denied"
        assert (await client.get(LIST)).status == 401
        risk = await member_with_roles(client, mail_sink, owner_conn, admin.org_id,
                                       ["Risk Manager"])
        seen = await get(client, risk, LIST, actor_id=str(viewer.user_id))
        assert [i["action"] for i in seen["items"]] == ["auth.login.succeeded"]

    async def test_each_filter_narrows_the_list(self, client: Any, mail_sink: Any,
                                                owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        assert admin.org_id is not None
        desk = await new_group(client, admin, "Zephyr desk")
        await rename_group(client, admin, desk["id"], "Zephyr room")
        other = await new_group(client, admin, "Quartz team")
        member = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])

        def actions(body: Any) -> list[str]:
            return [i["action"] for i in body["items"]]

        assert actions(await get(client, admin, LIST, action="group.created")) == \
            ["group.created", "group.created"]
        assert actions(await get(client, admin, LIST, resource_type="group",
                                 resource_id=desk["id"])) == ["group.updated", "group.created"]
        assert [i["resource_id"] for i in (await get(client, admin, LIST,
                                                     resource_type="group"))["items"]] == \
            [other["id"], desk["id"], desk["id"]]
        assert actions(await get(client, admin, LIST, actor_id=str(member.user_id))) == \
            ["auth.login.succeeded"]
        assert actions(await get(client, admin, LIST, q="zephyr")) == \
            ["group.updated", "group.created"]
        window = {"from": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
                  "to": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
        assert actions(await get(client, admin, LIST, q="ZEPHYR room", **window)) == \
            ["group.updated"]
        assert actions(await get(client, admin, LIST, q="zephyr nowhere", **window)) == []
        assert actions(await get(client, admin, LIST, q="quartz", action="group.created")) == \
            ["group.created"]
        email_word = admin.email.split("@")[0]  # "user-1a2b3c": `-` does not split words
        assert actions(await get(client, admin, LIST, q=email_word)) == ["user.registered"]

    async def test_from_is_inclusive_and_to_exclusive(self, client: Any,
                                                      mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for name in ("One", "Two", "Three"):
            await new_group(client, admin, name)
        items = (await get(client, admin, LIST, action="group.created"))["items"]
        middle = items[1]["occurred_at"]
        newer = await get(client, admin, LIST, action="group.created", **{"from": middle})
        older = await get(client, admin, LIST, action="group.created", to=middle)
        assert [i["id"] for i in newer["items"]] == [items[0]["id"], items[1]["id"]]
        assert [i["id"] for i in older["items"]] == [items[2]["id"]]
        offset = datetime.fromisoformat(middle).isoformat()  # "+00:00", sent unescaped
        raw = await client.get(f"{LIST}?action=group.created&from={offset}",
                               headers=admin.auth)
        assert len((await raw.json())["items"]) == 2

    async def test_pages_hold_still_while_new_entries_arrive(self, client: Any,
                                                             mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for n in range(5):
            await new_group(client, admin, f"Desk {n}")
        before = [i["id"] for i in (await get(client, admin, LIST))["items"]]
        first = await get(client, admin, LIST, limit=3)
        await new_group(client, admin, "Late arrival")
        rest = await every_page(client, admin, LIST, limit=3, cursor=first["next_cursor"])
        paged = [i["id"] for i in first["items"] + rest]
        assert paged == before
        assert len(set(paged)) == len(paged)
        latest = (await get(client, admin, LIST, limit=1))["items"][0]
        assert latest["details"] == {"name": "Late arrival"}

    async def test_bad_queries_answer_422(self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for query in ("actor_id=nope", "limit=0", "limit=201", "cursor=garbage",
                      "from=yesterday", "from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
                      "q=%21%21", "q=", "org_id=00000000-0000-0000-0000-000000000000",
                      "format=csv", "unknown=1"):
            response = await client.get(f"{LIST}?{query}", headers=admin.auth)
            assert response.status == 422, query
            assert response.content_type == "application/problem+json"


class TestPlatformListing:
    async def test_platform_admin_sees_every_org_and_filters_by_org(
            self, client: Any, config: Config, mail_sink: Any) -> None:
        first, second = await signed_up(client, mail_sink), await signed_up(client, mail_sink)
        await new_group(client, first, "Shared name")
        await new_group(client, second, "Shared name")
        failed = await client.post("/api/v1/auth/login", json={
            "email": unique_email("nobody"), "password": "not-a-real-password"})
        assert failed.status == 401
        admin = await platform_admin(client, config)
        both = await get(client, admin, ADMIN_LIST, q="shared", limit=2)
        assert {i["org_id"] for i in both["items"]} == {str(first.org_id), str(second.org_id)}
        only = await get(client, admin, ADMIN_LIST, q="shared", org_id=str(second.org_id))
        assert [i["org_id"] for i in only["items"]] == [str(second.org_id)]
        failures = await get(client, admin, ADMIN_LIST, action="auth.login.failed", limit=200)
        assert any(i["org_id"] is None and i["details"] == {"reason": "unknown_email"}
                   for i in failures["items"])
        refused = await client.get(ADMIN_LIST, headers=first.auth)
        assert refused.status == 403


def at(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its time parsed: ...:05.100000 and ...:05.1 are the same instant."""
    return {**entry, "occurred_at": datetime.fromisoformat(entry["occurred_at"])}


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


class TestExport:
    async def test_csv_and_jsonl_hold_the_filtered_entries_and_the_export_is_audited(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for name in ("North", "South"):
            await new_group(client, admin, name)
        listed = (await get(client, admin, LIST, action="group.created"))["items"]
        response = await client.get(f"{EXPORT}?format=csv&action=group.created",
                                    headers=admin.auth)
        assert response.status == 200
        assert response.content_type == "text/csv"
        assert response.headers["Content-Disposition"].startswith("attachment; filename=")
        rows = csv_rows(await response.text())
        assert [r["id"] for r in rows] == [i["id"] for i in listed]
        assert json.loads(rows[0]["details"]) == {"name": "South"}
        assert rows[0]["seq"] == str(listed[0]["seq"])
        jsonl = await client.get(f"{EXPORT}?format=jsonl&action=group.created&q=north",
                                 headers=admin.auth)
        assert jsonl.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await jsonl.text()).splitlines()]
        assert [at(e) for e in lines] == [at(listed[1])]
        exports = (await get(client, admin, LIST, action="audit.exported"))["items"]
        assert [e["details"] for e in exports] == [
            {"format": "jsonl", "filters": {"action": "group.created", "q": "north"}},
            {"format": "csv", "filters": {"action": "group.created"}}]
        assert exports[0]["actor_id"] == str(admin.user_id)
        assert exports[0]["resource_type"] == "audit_log"

    async def test_a_formula_sent_as_user_agent_is_escaped_in_the_csv(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        formula = "=HYPERLINK(\"http://attacker.test\",\"open\")"
        await login(client, admin.email, admin.password, **{"User-Agent": formula})
        response = await client.get(f"{EXPORT}?format=csv&action=auth.login.succeeded",
                                    headers=admin.auth)
        agents = [r["user_agent"] for r in csv_rows(await response.text())]
        assert "'" + formula in agents
        assert formula not in agents

    async def test_bad_export_queries_answer_422_and_write_nothing(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        # No format is CSV (tests/test_newcomer_errors.py), not a bad query.
        for query in ("format=xml", "format=", "format=csv&limit=5", "format=csv&q=%3F"):
            response = await client.get(f"{EXPORT}?{query}", headers=admin.auth)
            assert response.status == 422, query
        assert await owner_conn.fetchval(
            "select count(*) from audit_log where org_id = $1 and action = 'audit.exported'",
            admin.org_id) == 0


BULK = """
    alter table audit_log disable trigger user;
    insert into audit_log (org_id, actor_type, actor_id, action, resource_type, resource_id,
                           ip, user_agent, request_id, details, occurred_at, seq, prev_hash,
                           hash)
    select '{org}', 'user', '{actor}', 'order.created', 'order', md5(g::text)::uuid::text,
           '203.0.113.7', 'Mozilla/5.0 (bulk)', md5('r' || g),
           jsonb_build_object('symbol', 'EURUSD', 'volume', '0.10', 'n', g),
           now() - g * interval '1 second', 1000 + g, sha256(''), sha256(g::text::bytea)
    from generate_series(1, {entries}) g;
    alter table audit_log enable trigger user;
"""


class TestExportMemory:
    ENTRIES = 100_000
    LIMIT = 8 * 2**20

    @staticmethod
    async def export(client: Any, session: Session, query: str = "") -> tuple[int, int, int]:
        """Streams one CSV export and drops it: its lines, its bytes, and the peak of memory
        allocated meanwhile. Server and client share this process and the client keeps
        nothing, so the peak is the server's."""
        tracemalloc.start()
        try:
            response = await client.get(f"{EXPORT}?format=csv{query}", headers=session.auth)
            assert response.status == 200
            received = rows = 0
            last = b""
            async for chunk in response.content.iter_chunked(2**16):
                received += len(chunk)
                rows += (last + chunk[:1]).count(b"\r\n") + chunk.count(b"\r\n")
                last = chunk[-1:]
            return rows, received, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    @pytest.mark.slow
    async def test_an_export_of_100k_entries_streams_in_flat_memory(
            self, aiohttp_client: Any, postgres: Any, redis_server: Any,
            mail_sink: Any) -> None:
        # A database of its own: the bulk rows stand outside the hash chain (placeholder
        # hashes, written with the trigger off), which the shared database must not hold.
        urls = await make_database(postgres, "audit_export")
        client = await aiohttp_client(create_app(load_config(
            environ_for(urls, redis_server.url, mail_sink.port))))
        admin = await signed_up(client, mail_sink)
        owner = await asyncpg.connect(urls.owner)
        try:
            await owner.execute(BULK.format(org=admin.org_id, actor=admin.user_id,
                                            entries=self.ENTRIES))
            tenth = await owner.fetchval(
                "select occurred_at from audit_log where org_id = $1 and seq = 1000 + $2",
                admin.org_id, self.ENTRIES // 10)
        finally:
            await owner.close()
        few_rows, _, few_peak = await self.export(client, admin,
                                                  "&from=" + quote(tenth.isoformat()))
        rows, received, peak = await self.export(client, admin)
        assert few_rows == 1 + self.ENTRIES // 10 + 3  # header, bulk, registered, login, export
        assert rows == 1 + self.ENTRIES + 4  # and the first export
        assert received > 4 * self.LIMIT
        assert peak < self.LIMIT, f"peak {peak / 2**20:.1f} MiB for {received} bytes"
        # Flat: ten times the entries, not ten times the memory.
        assert peak < 1.5 * few_peak, (peak, few_peak)
