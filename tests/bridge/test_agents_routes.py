"""Agents and their API keys: shown once, stored as bcrypt, one bcrypt per key then the
cache, revoked everywhere at once, refused cheaply when wrong."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.bridge.api_keys import API_KEYS
from archomata.config import Config, RateLimit
from tests.factories import (
    agent_auth,
    agent_with_key,
    member_with_roles,
    platform_admin,
    signed_up,
)

HEARTBEAT = "/api/v1/bridge/heartbeat"
BEAT = {"version": "2.0.0"}


def count_bcrypt(app: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the bcrypt verifications the app's hasher runs from now on."""
    hasher = app[keys.PASSWORDS]
    original = hasher.verify
    calls = [0]

    async def counting(*args: Any) -> bool:
        calls[0] += 1
        return await original(*args)

    monkeypatch.setattr(hasher, "verify", counting)
    return calls


async def beat(client: Any, key: str) -> int:
    return (await client.post(HEARTBEAT, json=BEAT, headers=agent_auth(key))).status


class TestKeys:
    async def test_key_is_shown_once_in_the_contract_format_and_stored_as_bcrypt(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin, "Desk terminal")
        match = re.fullmatch(r"amk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})", key)
        assert match is not None
        assert agent["key_id"] == match[1]
        assert (agent["name"], agent["online"], agent["last_seen_at"]) == \
            ("Desk terminal", False, None)
        row = await owner_conn.fetchrow("select key_id, key_hash from agents where id = $1::uuid",
                                        agent["id"])
        assert row["key_hash"].startswith("$2b$")
        assert match[2] not in row["key_hash"]
        listed = await (await client.get("/api/v1/agents", headers=admin.auth)).text()
        assert match[2] not in listed and "key_hash" not in listed
        entries = await owner_conn.fetch("select details::text as d from audit_log "
                                         "where org_id = $1", admin.org_id)
        assert all(match[2] not in e["d"] for e in entries)

    async def test_heartbeat_makes_the_agent_online_with_its_version(
            self, client: Any, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        assert await beat(client, key) == 200
        listed = await (await client.get("/api/v1/agents", headers=admin.auth)).json()
        mine = next(a for a in listed["items"] if a["id"] == agent["id"])
        assert (mine["online"], mine["version"]) == (True, "2.0.0")
        assert mine["last_seen_at"] is not None
        upgraded = await client.post(HEARTBEAT, json={"version": "2.0.1", "terminals": [
            {"path": "C:/MT5", "build": 4620}]}, headers=agent_auth(key))
        assert upgraded.status == 200
        seen = await (await client.get(f"/api/v1/agents/{agent['id']}", headers=admin.auth)).json()
        assert seen["version"] == "2.0.1"
        assert seen["terminals"] == [{"path": "C:/MT5", "build": 4620}]

    async def test_rotation_and_deletion_stop_the_old_key_at_once(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        assert await beat(client, key) == 200
        rotated = await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                    headers=admin.auth)
        assert rotated.status == 200
        new_key = (await rotated.json())["api_key"]
        assert new_key != key
        assert await beat(client, key) == 401
        assert await beat(client, new_key) == 200
        deleted = await client.delete(f"/api/v1/agents/{agent['id']}", headers=admin.auth)
        assert deleted.status == 204
        assert await beat(client, new_key) == 401
        actions = [r["action"] for r in await owner_conn.fetch(
            "select action from audit_log where org_id = $1 and resource_id = $2 "
            "order by occurred_at", admin.org_id, agent["id"])]
        assert actions == ["agent.created", "agent.key_rotated", "agent.deleted"]

    async def test_rotated_key_is_refused_by_a_second_instance_within_a_second(
            self, client: Any, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        second = await aiohttp_client(create_app(config))
        await asyncio.wait_for(second.app[keys.BROADCAST].subscribed.wait(), 5)
        admin = await signed_up(client, mail_sink)
        agent, key = await agent_with_key(client, admin)
        assert await beat(second, key) == 200  # now in the second instance's cache
        assert len(second.app[API_KEYS].cache) >= 1
        rotated = await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                    headers=admin.auth)
        new_key = (await rotated.json())["api_key"]
        started = time.monotonic()
        while await beat(second, key) != 401:
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 1.0
        assert await beat(second, new_key) == 200

    async def test_wrong_malformed_and_unknown_keys_answer_401(self, client: Any,
                                                               mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        key_id = key.split("_")[1]
        for bad in ("", "amk_", "Bearer x", key + "x", key[:-1] + ("A" if key[-1] != "A" else "B"),
                    f"amk_{'0' * 16}_{'A' * 43}", f"amk_{key_id}_{'A' * 43}"):
            response = await client.post(HEARTBEAT, json=BEAT, headers=agent_auth(bad))
            assert response.status == 401, bad
            body = await response.json()
            assert body["code"] == "invalid_api_key"
            assert body["detail"] == "The API key is invalid."

    async def test_viewer_reads_agents_but_cannot_create_rotate_or_delete(
            self, client: Any, mail_sink: Any, owner_conn: Any) -> None:
        admin = await signed_up(client, mail_sink)
        agent, _ = await agent_with_key(client, admin)
        viewer = await member_with_roles(client, mail_sink, owner_conn, admin.org_id, ["Viewer"])
        assert (await client.get("/api/v1/agents", headers=viewer.auth)).status == 200
        assert (await client.post("/api/v1/agents", json={"name": "x"},
                                  headers=viewer.auth)).status == 403
        assert (await client.post(f"/api/v1/agents/{agent['id']}/rotate-key",
                                  headers=viewer.auth)).status == 403
        assert (await client.delete(f"/api/v1/agents/{agent['id']}",
                                    headers=viewer.auth)).status == 403


class TestCost:
    async def test_a_hundred_requests_with_one_key_cost_one_bcrypt(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        calls = count_bcrypt(client.app, monkeypatch)
        statuses = await asyncio.gather(*(beat(client, key) for _ in range(50)))
        statuses += [await beat(client, key) for _ in range(50)]
        assert statuses == [200] * 100
        assert calls == [1]

    async def test_malformed_keys_and_unknown_key_ids_cost_no_bcrypt(
            self, client: Any, mail_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        calls = count_bcrypt(client.app, monkeypatch)
        for bad in ("nonsense", "amk_" + "z" * 60, f"amk_{'1' * 16}_{'A' * 43}"):
            assert await beat(client, bad) == 401
        assert calls == [0]
        wrong_secret = f"amk_{key.split('_')[1]}_{'A' * 43}"
        assert await beat(client, wrong_secret) == 401
        assert calls == [1]

    async def test_failed_keys_count_against_the_bridge_rate_limit(
            self, aiohttp_client: Any, config: Config, mail_sink: Any,
            monkeypatch: pytest.MonkeyPatch) -> None:
        limited = dataclasses.replace(config, rate_limit_bridge=RateLimit(5, 60))
        client = await aiohttp_client(create_app(limited))
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        await client.app[keys.REDIS].delete("rl:bridge:127.0.0.1")
        calls = count_bcrypt(client.app, monkeypatch)
        wrong_secret = f"amk_{key.split('_')[1]}_{'A' * 43}"
        statuses = [await beat(client, wrong_secret) for _ in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        assert calls == [5]
        refused = await client.post(HEARTBEAT, json=BEAT, headers=agent_auth(key))
        assert refused.status == 429
        assert refused.headers["Retry-After"]
        await client.app[keys.REDIS].delete("rl:bridge:127.0.0.1")


class TestOrgDisabled:
    async def test_disabling_the_org_stops_its_agents_keys_at_once(
            self, client: Any, config: Config, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        assert await beat(client, key) == 200  # cached
        platform = await platform_admin(client, config)
        disabled = await client.post(f"/api/v1/admin/orgs/{admin.org_id}/disable",
                                     headers=platform.auth)
        assert disabled.status == 200
        refused = await client.post(HEARTBEAT, json=BEAT, headers=agent_auth(key))
        assert refused.status == 401
        assert (await refused.json())["code"] == "org_disabled"
        client.app[API_KEYS].cache.clear()  # the database says so too
        assert await beat(client, key) == 401
        await client.post(f"/api/v1/admin/orgs/{admin.org_id}/enable", headers=platform.auth)
        assert await beat(client, key) == 200

    async def test_keys_survive_a_redis_flush_but_a_disabled_org_stays_disabled(
            self, client: Any, config: Config, mail_sink: Any) -> None:
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        other = await signed_up(client, mail_sink)
        _, other_key = await agent_with_key(client, other)
        platform = await platform_admin(client, config)
        await client.post(f"/api/v1/admin/orgs/{other.org_id}/disable", headers=platform.auth)
        await client.app[keys.REDIS].flushall()
        assert await beat(client, key) == 200
        assert await beat(client, other_key) == 401
