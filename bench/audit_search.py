"""A tenant's audit searches against another tenant's requests: org A has a large log
(a million entries by default) in which two common words never occur together; eight
clients search it for both words at once, again and again, while org B's GET /org is
timed. Target: B's median within 2x of its median with no search running (the
contract's "one org's searches never slow another org's requests beyond 2x idle").

The entries are written as the owner in one INSERT ... SELECT generate_series, outside
the hash chain (its trigger off; the search does not read the hashes), with their search
terms. tests/audit/test_search_bounds.py runs the same load on fewer entries.

Run: .venv/bin/python -m bench.audit_search [--entries 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

from bench.lib import bench_admin, serve, stack

# Half the entries say `alpha`, the other half `bravo`, spread over the last 20 days.
FILL = [
    "select set_config('app.platform', 'on', true)",
    "alter table audit_log disable trigger audit_log_chain",
    """
    with head as (select coalesce(max(seq), 0) as seq from audit_log where org_id = $1),
    added as (
        insert into audit_log (org_id, actor_type, action, resource_type, details, seq,
                               prev_hash, hash, occurred_at)
        select $1, 'system', 'org.updated', 'org',
               jsonb_build_object('word', case when g % 2 = 0 then 'alpha' else 'bravo' end,
                                  'n', g),
               head.seq + g, sha256(''), sha256(g::text::bytea),
               now() - interval '20 days' * (1 - g::float8 / $2::int)
        from head, generate_series(1, $2::int) g
        returning id, occurred_at, details->>'word' as word)
    insert into audit_log_terms (chain_id, term, occurred_at, entry_id)
    select $1, t.term, a.occurred_at, a.id
    from added a, unnest(array['org', 'updated', a.word]) t(term)
    """,
    """
    update audit_chain_heads h set seq = a.seq, hash = a.hash
    from (select seq, hash from audit_log where org_id = $1 order by seq desc limit 1) a
    where h.chain_id = $1
    """,
    "alter table audit_log enable trigger audit_log_chain",
]
QUERY = "q=alpha+bravo&from={since}&to={until}"
SEARCHERS = 8
PASSWORD = "search-bench-pw-1234567"


async def fill(owner_url: str, org_id: UUID, entries: int) -> None:
    conn = await asyncpg.connect(owner_url)
    try:
        async with conn.transaction():
            for statement in FILL:
                args = (org_id, entries) if "$2" in statement else \
                    (org_id,) if "$1" in statement else ()
                await conn.execute(statement, *args)
        await conn.execute("analyze audit_log")
        await conn.execute("analyze audit_log_terms")
    finally:
        await conn.close()


def search_url(base: str) -> str:
    now = datetime.now(UTC)
    window = QUERY.format(since=(now - timedelta(days=25)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                          until=(now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return f"{base}/api/v1/audit-logs?{window}"


async def timed_gets(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                     count: int) -> list[float]:
    """Milliseconds of `count` GETs of `url`, one after another."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        times.append((time.perf_counter() - started) * 1000)
    return times


async def searching(session: aiohttp.ClientSession, url: str, headers: list[dict[str, str]],
                    stop: asyncio.Event, seen: Counter[str]) -> None:
    """SEARCHERS clients searching at once, each again as soon as it has its answer."""
    async def one(auth: dict[str, str]) -> None:
        while not stop.is_set():
            async with session.get(url, headers=auth) as response:
                body: Any = await response.json()
                seen[f"{response.status} {body.get('code', '') if response.status >= 400 else ''}"
                     .strip()] += 1
                if response.status == 429:  # this person's limit: wait as told
                    await asyncio.sleep(float(response.headers["Retry-After"]))
    await asyncio.gather(*(one(headers[n % len(headers)]) for n in range(SEARCHERS)))


async def compare(base: str, searchers: list[dict[str, str]], other: dict[str, str],
                  requests: int = 40) -> tuple[float, float, Counter[str]]:
    """Org B's median GET /org idle, and while the searches run; what the searches got."""
    org = f"{base}/api/v1/org"
    async with aiohttp.ClientSession() as session:
        await timed_gets(session, org, other, 10)  # warm up
        idle = await timed_gets(session, org, other, requests)
        stop, seen = asyncio.Event(), Counter[str]()
        load = asyncio.create_task(searching(session, search_url(base), searchers, stop, seen))
        await asyncio.sleep(0.5)  # the searches under way
        loaded = await timed_gets(session, org, other, requests)
        stop.set()
        await load
        idle += await timed_gets(session, org, other, requests)  # idle on both sides
    return statistics.median(idle), statistics.median(loaded), seen


async def login(base: str, email: str, password: str,
                org_id: UUID | None = None) -> dict[str, str]:
    body = {"email": email, "password": password} | ({"org_id": str(org_id)} if org_id else {})
    async with aiohttp.ClientSession() as session, session.post(
            f"{base}/api/v1/auth/login", json=body) as r:
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


async def colleagues(database: str, owner_url: str, org_id: UUID) -> list[str]:
    """SEARCHERS - 1 more people of `org_id` who may read its audit log (each search
    budget is a person's): made with orgs of their own, joined as the owner."""
    emails = [f"searcher-{n}@bench.test" for n in range(1, SEARCHERS)]
    for email in emails:
        account = await bench_admin(database, email, PASSWORD)
        conn = await asyncpg.connect(owner_url)
        try:
            await conn.execute("insert into memberships (org_id, user_id, org_role) "
                               "values ($1, $2, 'member')", org_id, account.user.id)
            await conn.execute("insert into member_roles (org_id, user_id, role_id) select "
                               "$1, $2, id from roles where name = 'Risk Manager'",
                               org_id, account.user.id)
        finally:
            await conn.close()
    return emails


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with stack(bcrypt_rounds=4) as env:
        database = env.environ["ARCHOMATA_DATABASE_URL"]
        searcher = asyncio.run(bench_admin(database, "searcher@bench.test", PASSWORD))
        asyncio.run(bench_admin(database, "bystander@bench.test", PASSWORD))
        emails = asyncio.run(colleagues(database, env.owner_url, searcher.org.id))
        started = time.monotonic()
        asyncio.run(fill(env.owner_url, searcher.org.id, args.entries))
        print(f"audit_search: {args.entries:,} entries written in "
              f"{time.monotonic() - started:.0f} s")
        with serve(env.environ, env.workdir) as base:
            searchers = [asyncio.run(login(base, "searcher@bench.test", PASSWORD))] + [
                asyncio.run(login(base, email, PASSWORD, searcher.org.id)) for email in emails]
            other = asyncio.run(login(base, "bystander@bench.test", PASSWORD))
            for n in range(args.rounds):
                idle, loaded, seen = asyncio.run(compare(base, searchers, other))
                print(f"round {n + 1}: another org's GET /org median {idle:.1f} ms idle, "
                      f"{loaded:.1f} ms under {SEARCHERS} searches = {loaded / idle:.2f}x "
                      f"(target <= 2x); searches answered {dict(seen)}")


if __name__ == "__main__":
    main()
