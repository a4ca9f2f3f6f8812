"""Bad input never reaches a 500 (issue 11, point 9): each case found in review, through
the real API on real PostgreSQL, Redis and SMTP, and the siblings of each."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from tests.factories import (
    agent_auth,
    agent_with_key,
    signed_up,
    trading_account,
    unique_email,
    wait_for_mail,
)

JSON = {"Content-Type": "application/json"}


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["code"] == code, body
    return body


async def refused_field(response: Any, field: str) -> None:
    body = await problem(response, 422, "validation_failed")
    assert field in body["errors"], body


def nested(levels: int) -> bytes:
    return b'{"email": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


class TestControlCharacters:
    async def test_nul_in_the_login_email_names_the_field(self, client: Any) -> None:
        response = await client.post("/api/v1/auth/login", json={
            "email": "someone\x00@example.test", "password": "whatever-password"})
        await refused_field(response, "email")

    @pytest.mark.parametrize("field", ["name", "org_name"])
    async def test_nul_in_registration_names_the_field(self, client: Any, field: str) -> None:
        body = {"email": unique_email(), "password": "a-long-enough-password-1",
                "name": "Person", "org_name": "Org", field: "Ev\x00il"}
        await refused_field(await client.post("/api/v1/auth/register", json=body), field)

    async def test_nul_in_the_audit_search_names_the_parameter(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for path in ("/api/v1/audit-logs", "/api/v1/audit-logs/export"):
            response = await client.get(path, params={"q": "login\x00", "format": "csv"},
                                        headers=admin.auth)
            await refused_field(response, "q")

    @pytest.mark.parametrize("value", ["a\x01b", "a\x1fb", "a\x7fb", "a\x08b"])
    async def test_other_controls_are_refused_in_multi_line_fields_too(
            self, client: Any, mail_sink: Any, value: str) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/groups", json={
            "name": "Desk", "description": value}, headers=admin.auth)
        await refused_field(response, "description")

    async def test_multi_line_fields_keep_tabs_and_line_breaks(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/groups", json={
            "name": "Desk", "description": "line one\r\n\tline two"}, headers=admin.auth)
        assert response.status == 201, await response.text()
        assert (await response.json())["description"] == "line one\r\n\tline two"

    @pytest.mark.parametrize("value", ["Desk\nBcc: x@y.test", "Desk\rX", "Desk\tA",
                                       "Desk\u2028A", "Desk\x85A"])
    async def test_single_line_fields_refuse_breaks_and_tabs(
            self, client: Any, mail_sink: Any, value: str) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/groups", json={"name": value},
                                     headers=admin.auth)
        await refused_field(response, "name")

    async def test_nul_deep_in_free_form_json_names_its_path(
            self, client: Any, mail_sink: Any) -> None:
        # Strategy parameters are stored as jsonb, which refuses \u0000 (a 500 before).
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/strategies", json={
            "name": "Grid", "parameters": {"levels": [1, {"note": "a\x00"}]}},
            headers=admin.auth)
        await refused_field(response, "parameters.levels.1.note")
        _, key = await agent_with_key(client, admin)
        beat = await client.post("/api/v1/bridge/heartbeat", json={
            "version": "1.0", "terminals": [{"path": "C:\\MT5\x00"}]}, headers=agent_auth(key))
        await refused_field(beat, "terminals.0.path")

    async def test_an_escaped_backslash_is_not_a_control_character(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/groups", json={
            "name": "Desk \\u0000 \\b"}, headers=admin.auth)
        assert response.status == 201, await response.text()

    async def test_query_and_path_parameters_follow_the_same_rules(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        listed = await client.get("/api/v1/orders", params={"status": "filled\n"},
                                  headers=admin.auth)
        await refused_field(listed, "status")
        odd_name = await client.get("/api/v1/orders?sta%00tus=filled", headers=admin.auth)
        await refused_field(odd_name, "_query")
        path = await client.get("/api/v1/accounts/abc%00def/positions", headers=admin.auth)
        await refused_field(path, "account_id")
        public = await client.get("/api/v1/auth/sso/goo%0Agle/login")
        await refused_field(public, "provider")

    async def test_an_anonymous_caller_of_a_guarded_route_hears_401_first(
            self, client: Any) -> None:
        response = await client.get("/api/v1/orders?status=%00")
        await problem(response, 401, "not_authenticated")


    @pytest.mark.parametrize("inside", [["2026-01-01T00:00:00+00:00", 5],
                                        ["2026-01-01T00:00:00+00:00", [1]], [1, 2, 3]])
    async def test_a_cursor_holding_other_json_is_refused(
            self, client: Any, mail_sink: Any, inside: list[Any]) -> None:
        admin = await signed_up(client, mail_sink)
        cursor = base64.urlsafe_b64encode(json.dumps(inside).encode()).decode().rstrip("=")
        response = await client.get("/api/v1/groups", params={"cursor": cursor},
                                    headers=admin.auth)
        await refused_field(response, "cursor")


class TestJsonLimits:
    async def test_nesting_past_orjson_and_the_stack_is_a_400(self, client: Any) -> None:
        # Past orjson's 1024 levels the stdlib parser took over, and recursed into a 500.
        response = await client.post("/api/v1/auth/login", data=nested(5000), headers=JSON)
        await problem(response, 400, "json_too_deep")

    async def test_nesting_limit_is_64_levels(self, client: Any) -> None:
        too_deep = await client.post("/api/v1/auth/login", data=nested(65), headers=JSON)
        await problem(too_deep, 400, "json_too_deep")
        deepest = await client.post("/api/v1/auth/login", data=nested(64), headers=JSON)
        await refused_field(deepest, "email")  # read, then refused by the schema

    @pytest.mark.parametrize("number", [b"1" * 4301, b"-" + b"9" * 5000, b"%d" % 2**64,
                                        b"%d" % -(2**63 + 1), b"1e400"])
    async def test_numbers_past_64_bits_are_a_stable_400(self, client: Any,
                                                         number: bytes) -> None:
        response = await client.post(
            "/api/v1/auth/login", data=b'{"email": "a@b.test", "password": ' + number + b"}",
            headers=JSON)
        await problem(response, 400, "number_out_of_range")

    async def test_a_long_digit_run_inside_a_string_is_text(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/groups", json={
            "name": "x", "description": "[" + "9" * 1900 + ","}, headers=admin.auth)
        assert response.status == 201, await response.text()

    async def test_64_bit_integers_still_reach_validation(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.post("/api/v1/accounts", json={
            "name": "A", "broker": "B", "server": "S", "login": 2**64 - 1,
            "environment": "demo"}, headers=admin.auth)
        await refused_field(response, "login")


class TestMail:
    async def test_line_breaks_in_an_org_name_are_refused(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        response = await client.patch("/api/v1/org", json={"name": "Acme\r\nBcc: a@b.test"},
                                      headers=admin.auth)
        await refused_field(response, "name")

    async def test_an_invitation_from_an_org_whose_stored_name_has_a_line_break_is_mailed(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        # A name stored before the rule (here written as the owner): the mail's Subject
        # raised after the invitation had committed, a 500 with an invitation unmailed.
        admin = await signed_up(client, mail_sink)
        await owner_conn.execute("update orgs set name = $2 where id = $1", admin.org_id,
                                 "Acme\r\nBcc: victim@example.test")
        invitee = unique_email("invitee")
        response = await client.post("/api/v1/org/invitations", json={"email": invitee},
                                     headers=admin.auth)
        assert response.status == 201, await response.text()
        await wait_for_mail(mail_sink, invitee, "invited")
        mail = mail_sink.to(invitee)[-1]
        assert mail["Subject"] == "You are invited to Acme Bcc: victim@example.test on Archomata"
        assert mail["Bcc"] is None


class TestUniqueViolations:
    async def test_repeated_tickets_in_one_state_push_name_the_row(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        position = {"ticket": 7, "symbol": "EURUSD", "side": "buy", "volume": "0.10",
                    "open_price": "1.085", "opened_at": "2026-11-28T09:30:00Z"}
        response = await client.put(
            f"/api/v1/bridge/accounts/{account['login']}/state", headers=agent_auth(key),
            json={"balance": "1", "equity": "1", "margin": "0", "free_margin": "1",
                  "currency": "USD", "positions": [position, dict(position, ticket=8),
                                                   position]})
        await refused_field(response, "positions.2.ticket")

    async def test_repeated_tickets_in_one_deal_batch_count_as_duplicates(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        account = await trading_account(client, admin, agent_id=agent["id"])
        deal = {"ticket": 9, "symbol": "EURUSD", "side": "buy", "volume": "0.10",
                "price": "1.085", "executed_at": "2026-11-28T09:30:00Z"}
        response = await client.post(f"/api/v1/bridge/accounts/{account['login']}/deals",
                                     json={"deals": [deal, deal]}, headers=agent_auth(key))
        assert response.status == 200, await response.text()
        assert await response.json() == {"inserted": 1, "duplicates": 1}

    async def test_a_rename_racing_another_to_the_same_name_is_409(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        created = await client.post("/api/v1/groups", json={"name": "Desk A"},
                                    headers=admin.auth)
        group_id = (await created.json())["id"]
        # The racing rename: "Desk B" exists, uncommitted, when the PATCH checks; the
        # PATCH's UPDATE then waits on the unique index, and fails once it commits.
        racer = owner_conn.transaction()
        await racer.start()
        await owner_conn.execute("insert into groups (org_id, name) values ($1, 'Desk B')",
                                 admin.org_id)
        patch = asyncio.ensure_future(client.patch(
            f"/api/v1/groups/{group_id}", json={"name": "Desk B"}, headers=admin.auth))
        try:
            await _until_a_lock_is_awaited(owner_conn)
        finally:
            await racer.commit()
        await problem(await patch, 409, "group_name_taken")

    async def test_strategy_and_account_names_taken_keep_their_codes(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        for _ in range(2):
            response = await client.post("/api/v1/strategies", json={"name": "Twin"},
                                         headers=admin.auth)
        await problem(response, 409, "name_taken")
        agent, _ = await agent_with_key(client, admin)
        first = await trading_account(client, admin, agent_id=agent["id"])
        twin = await client.post("/api/v1/accounts", json={
            "name": "B", "broker": "B", "server": "S", "login": first["login"],
            "environment": "demo", "agent_id": agent["id"]}, headers=admin.auth)
        await problem(twin, 409, "login_taken")


async def _until_a_lock_is_awaited(conn: Any) -> None:
    for _ in range(500):
        if await conn.fetchval("select count(*) from pg_locks where not granted"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the PATCH never waited on the racing insert")
