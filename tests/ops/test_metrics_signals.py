"""An operator's signals on /metrics (issue 25, point 6), each moved by the real event
through the real app on real PostgreSQL and Redis: logins and second-factor answers by
outcome, rate-limit refusals by bucket, a replayed refresh cookie, bridge commands
leased and expired (counters) and by state (gauges read at scrape time), agents online;
the process and platform collectors; bounded labels; no `_created` series."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

from redis.asyncio import Redis

from archomata import keys
from archomata.app import create_app
from archomata.config import Config, RateLimit, Secret
from archomata.metrics import LOGIN_OUTCOMES, RATE_LIMIT_BUCKETS, SECOND_FACTOR_OUTCOMES
from archomata.ops.devservers import RedisServer
from tests import sockets
from tests.bridge.test_leases import LEASE_SECONDS, commands, desk
from tests.factories import agent_auth, signed_up, unique_email
from tests.identity.test_auth import refresh
from tests.identity.test_mfa import challenge, code, enrol

SIGNALS_DB = 12  # this module's own Redis database, for the tight login limit
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? "
                    r"(?P<value>\S+)$", re.MULTILINE)
FIXED = {"archomata_logins_total": ("outcome", LOGIN_OUTCOMES),
         "archomata_second_factor_answers_total": ("outcome", SECOND_FACTOR_OUTCOMES),
         "archomata_ratelimit_refusals_total": ("bucket", RATE_LIMIT_BUCKETS),
         "archomata_bridge_commands": ("state", ("waiting", "leased", "expired"))}


async def scrape(client: Any) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    text: str = await response.text()
    return text


def samples(text: str) -> dict[tuple[str, str], float]:
    return {(m["name"], m["labels"] or ""): float(m["value"]) for m in SAMPLE.finditer(text)}


async def value(client: Any, name: str, labels: str = "") -> float:
    return samples(await scrape(client)).get((name, labels), 0.0)


async def login_as(client: Any, email: str, password: str) -> Any:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


class TestTheCollectors:
    async def test_process_platform_and_gc_figures_and_no_created_series(
            self, client: Any) -> None:
        text = await scrape(client)
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                     "process_open_fds", "python_info", "python_gc_collections_total"):
            assert re.search(rf"^{name}[{{ ]", text, re.MULTILINE), name
        assert "_created" not in text

    async def test_every_label_is_from_its_fixed_set(self, client: Any,
                                                     mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        await login_as(client, me.email, "wrong password")
        found = samples(await scrape(client))
        for name, (label, allowed) in FIXED.items():
            seen = [labels for (n, labels) in found if n == name]
            assert seen, name  # every child is there from the start, at 0
            for labels in seen:
                [(key, val)] = re.findall(r'(\w+)="([^"]*)"', labels)
                assert key == label and val in allowed, (name, labels)
        # No user, org, account or login anywhere among the labels.
        assert me.email not in "".join(labels for _, labels in found)
        assert str(me.user_id) not in "".join(labels for _, labels in found)


class TestLogins:
    async def test_each_login_counts_by_its_outcome(self, client: Any, mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        name = "archomata_logins_total"
        before = samples(await scrape(client))
        assert (await login_as(client, me.email, "not the password")).status == 401
        assert (await login_as(client, unique_email(), "not the password")).status == 401
        assert (await login_as(client, me.email, me.password)).status == 200
        after = samples(await scrape(client))
        for outcome in ("bad_password", "unknown_email", "success"):
            key = (name, f'outcome="{outcome}"')
            assert after[key] == before[key] + 1, outcome

    async def test_second_factor_answers_count_by_outcome(self, client: Any,
                                                          mail_sink: Any) -> None:
        me = await signed_up(client, mail_sink)
        secret, _ = await enrol(client, me)
        answers = "archomata_second_factor_answers_total"
        before = samples(await scrape(client))
        token = await challenge(client, me)
        verify = "/api/v1/auth/mfa/verify"
        assert (await client.post(verify, json={"mfa_token": token, "code": "000000"})
                ).status == 401
        assert (await client.post(verify, json={"mfa_token": token, "code": code(secret, 1)})
                ).status == 200
        assert (await client.post(verify, json={"mfa_token": token, "code": code(secret, 1)})
                ).status == 400
        after = samples(await scrape(client))
        for outcome in ("wrong", "right", "expired"):
            key = (answers, f'outcome="{outcome}"')
            assert after[key] == before[key] + 1, outcome
        key = ("archomata_logins_total", 'outcome="second_factor_required"')
        assert after[key] == before[key] + 1


class TestRefusals:
    async def test_a_refused_login_counts_in_its_bucket(
            self, aiohttp_client: Any, config: Config, redis_server: RedisServer) -> None:
        url = f"redis://127.0.0.1:{redis_server.port}/{SIGNALS_DB}"
        redis = Redis.from_url(url)
        await redis.flushdb()
        await redis.aclose()
        client = await aiohttp_client(create_app(dataclasses.replace(
            config, redis_url=Secret(url), rate_limit_login=RateLimit(2, 60))))
        bucket = ("archomata_ratelimit_refusals_total", 'bucket="login"')
        before = samples(await scrape(client))
        statuses = [(await login_as(client, unique_email(), "x")).status for _ in range(3)]
        assert statuses == [401, 401, 429]
        after = samples(await scrape(client))
        assert after[bucket] == before[bucket] + 1
        others = [k for k in after if k[0] == bucket[0] and k != bucket]
        assert all(after[k] == before[k] for k in others)

    async def test_the_account_backoff_counts_as_its_own_bucket(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(
            dataclasses.replace(config, login_backoff_after=1)))
        me = await signed_up(client, mail_sink)
        before = samples(await scrape(client))
        statuses = [(await login_as(client, me.email, "wrong")).status for _ in range(3)]
        assert statuses[-1] == 429
        after = samples(await scrape(client))
        backoff = ("archomata_ratelimit_refusals_total", 'bucket="login_backoff"')
        throttled = ("archomata_logins_total", 'outcome="throttled"')
        refused = statuses.count(429)
        assert after[backoff] == before[backoff] + refused
        assert after[throttled] == before[throttled] + refused

    async def test_a_replayed_refresh_cookie_counts_once(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(
            dataclasses.replace(config, refresh_reuse_grace_seconds=0)))
        me = await signed_up(client, mail_sink)
        assert me.refresh is not None
        name = "archomata_refresh_reuse_detected_total"
        before = await value(client, name)
        assert (await refresh(client, me.refresh)).status == 200
        assert await value(client, name) == before  # a rotation is no reuse
        assert (await refresh(client, me.refresh)).status == 401
        assert await value(client, name) == before + 1
        assert (await refresh(client, me.refresh)).status == 401  # the family is gone
        assert await value(client, name) == before + 1


class TestBridge:
    async def test_commands_leased_expired_and_by_state(
            self, aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
        client, admin, key, account = await desk(aiohttp_client, config, mail_sink)
        state = "archomata_bridge_commands"
        start = samples(await scrape(client))
        placed = await client.post(f"/api/v1/accounts/{account['id']}/orders",
                                   headers=admin.auth, json={"symbol": "EURUSD", "side": "buy",
                                                             "type": "market", "volume": "1"})
        assert placed.status == 201, await placed.text()
        waiting = samples(await scrape(client))
        assert waiting[(state, 'state="waiting"')] == start[(state, 'state="waiting"')] + 1
        assert waiting[("archomata_bridge_oldest_waiting_seconds", "")] > 0
        [first] = await commands(client, key)
        leased = samples(await scrape(client))
        assert leased[(state, 'state="leased"')] == start[(state, 'state="leased"')] + 1
        assert leased[("archomata_bridge_commands_leased_total", "")] == \
            start[("archomata_bridge_commands_leased_total", "")] + 1
        await asyncio.sleep(LEASE_SECONDS + 0.2)  # no result: the lease runs out
        expired = samples(await scrape(client))
        assert expired[(state, 'state="expired"')] == start[(state, 'state="expired"')] + 1
        [again] = await commands(client, key)
        assert (again["id"], again["attempt"]) == (first["id"], 2)
        end = samples(await scrape(client))
        for counter in ("archomata_bridge_commands_leased_total",
                        "archomata_bridge_leases_expired_total"):
            assert end[(counter, "")] == start[(counter, "")] + (
                2 if "leased" in counter else 1), counter

    async def test_an_agent_polling_is_online(self, aiohttp_client: Any, config: Config,
                                              mail_sink: Any) -> None:
        client, _, key, _ = await desk(aiohttp_client, config, mail_sink)
        online = "archomata_bridge_agents_online"
        assert await value(client, online) == 0
        polling = await sockets.request(client.port, "/api/v1/bridge/commands?wait=20",
                                        agent_auth(key))
        try:
            for _ in range(100):
                if await value(client, online) == 1:
                    break
                await asyncio.sleep(0.05)
            assert await value(client, online) == 1
        finally:
            polling.close()
            client.app[keys.BROADCAST].release_all()


async def test_the_queue_query_reads_only_the_live_commands(owner_conn: Any) -> None:
    """The scrape's one query walks the partial indexes of pending and claimed commands:
    its cost follows the queue, not the done commands a table piles up."""
    from archomata.bridge.commands import QUEUE

    async with owner_conn.transaction():
        # A copy of the table with its indexes, in this transaction alone, mostly done.
        await owner_conn.execute(
            "create temp table commands (like public.commands including all) on commit drop")
        await owner_conn.execute(
            "insert into commands (org_id, account_id, type, payload, status, attempt, "
            "lease_expires_at) select gen_random_uuid(), gen_random_uuid(), 'place_order', "
            "'{}', case i % 10000 when 0 then 'pending' when 1 then 'claimed' else 'done' "
            "end, 1, now() from generate_series(1, 200000) i")
        await owner_conn.execute("analyze commands")
        plan = "\n".join(row[0] for row in await owner_conn.fetch("explain " + QUEUE))
    assert "Seq Scan" not in plan, plan
