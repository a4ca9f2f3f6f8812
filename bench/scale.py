"""Cost as an org's data grows: p50 of every list and filter at each size, over HTTP.

    .venv/bin/python -m bench.scale [--sizes 1000,1000000] [--samples 15]

For each size N, a new org and its administrator, then, loaded as the owner with
generate_series: N members, N orders (on two accounts, 1% rejected), N deals on one
account (1% XAUUSD), N audit entries (half by one bot, each with a word of a hundred:
`w7` is in 1%); and a platform administrator of its own. Then each endpoint is asked
`--samples` times in turn (a search fewer: 20 a minute per person) and its p50 printed;
at the end, each size's p50 over the first size's. The service runs with a pool of one
connection, so that PostgreSQL settles on generic plans as a busy instance does.
Nothing is asserted: the target (issue 25, point 10) is every ratio within 3x at 10^6.
The query plans themselves are tested in tests/trading/test_list_plans.py,
tests/orgs/test_member_plans.py and tests/audit/test_store_plans.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from uuid import UUID

import aiohttp
import asyncpg

from archomata.ops.devservers import free_port
from archomata.web.pagination import encode
from bench.lib import ROOT, bench_admin, process, stack

PASSWORD = "scale-password-123456"
BOT = UUID("b0b0b0b0-0000-4000-8000-000000000001")
SEARCHES = 9  # each person's searches per size: under SEARCHES_PER_USER (20 a minute)

LOAD = """
with u as (
    insert into users (email, email_normalized, name, email_verified_at)
    select 's' || $2 || 'm' || g || '@bench.test', 's' || $2 || 'm' || g || '@bench.test',
           'Member ' || g, now()
    from generate_series(1, $3) g
    returning id, email
)
insert into memberships (org_id, user_id, org_role, created_at)
select $1, id, 'member', timestamptz '2024-01-01' + row_number() over () * interval '1 s'
from u;

insert into accounts (id, org_id, name, broker, server, login, environment)
values ($4, $1, 'Main', 'Broker', 'Server-1', 1, 'demo'),
       ($5, $1, 'Side', 'Broker', 'Server-1', 2, 'demo');

insert into orders (org_id, account_id, symbol, side, type, volume, status, created_at,
                    updated_at, client_tag)
select $1, case when g % 10 = 0 then $5 else $4 end, 'EURUSD', 'buy', 'market', 1,
       case when g % 100 = 0 then 'rejected' else 'filled' end,
       timestamptz '2024-01-01' + g * interval '1 s', now(),
       'x' || left(md5($1::text || g), 19)
from generate_series(1, $3) g;

insert into deals (org_id, account_id, ticket, symbol, side, volume, price, executed_at)
select $1, $4, g, case when g % 100 = 0 then 'XAUUSD'
                       else (array['EURUSD', 'GBPUSD', 'USDJPY', 'AUDUSD'])[1 + g % 4] end,
       'buy', 1, 1.1, timestamptz '2024-01-01' + g * interval '1 s'
from generate_series(1, $3) g;

alter table audit_log disable trigger user;
insert into audit_log (id, occurred_at, org_id, actor_type, actor_id, action, resource_type,
                       resource_id, details, seq, prev_hash, hash)
select md5($1::text || 'e' || g)::uuid, timestamptz '2024-01-01' + g * interval '1 s', $1,
       'user', case when g % 2 = 0 then $6 else md5('actor' || g % 1000)::uuid end,
       'order.created', 'order', md5('r' || g)::uuid::text,
       jsonb_build_object('note', 'w' || g % 100),
       -- After the chain's real entries; hashes are placeholders (nothing verifies them).
       (select seq from audit_chain_heads where chain_id = $1) + g,
       sha256(md5('p' || g)::bytea), sha256(md5('h' || g)::bytea)
from generate_series(1, $3) g;
alter table audit_log enable trigger user;
insert into audit_log_terms (chain_id, term, occurred_at, entry_id)
select $1, t.term, timestamptz '2024-01-01' + g * interval '1 s', md5($1::text || 'e' || g)::uuid
from generate_series(1, $3) g, unnest(array['order', 'created', 'w' || g % 100]) t(term);
-- The chain goes on after the loaded entries: the service's next entry links to the last.
update audit_chain_heads h set seq = a.seq, hash = a.hash
from (select seq, hash from audit_log where org_id = $1 order by seq desc limit 1) a
where h.chain_id = $1;
"""


@dataclass
class Org:
    size: int
    org_id: UUID
    main: UUID  # the account holding 90% of the orders and every deal
    side: UUID
    token: str = ""
    platform_token: str = ""
    middle: str = ""  # a members cursor half way through


async def load(owner_dsn: str, runtime_dsn: str, size: int) -> Org:
    """A new org of `size` of everything, its administrator and a platform administrator."""
    account = await bench_admin(runtime_dsn, f"admin{size}@scale.test", PASSWORD)
    org = Org(size, account.org.id, UUID(int=size * 2 + 1), UUID(int=size * 2 + 2))
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("set maintenance_work_mem = '256MB'")
        async with conn.transaction():
            await conn.execute(_bound(LOAD, org, size))
        for table in ("users", "memberships", "orders", "deals", "audit_log", "audit_log_terms"):
            await conn.execute(f"vacuum analyze {table}")
        row = await conn.fetchrow(
            "select created_at, user_id from memberships where org_id = $1 "
            "order by created_at, user_id offset $2 limit 1", org.org_id, size // 2)
        org.middle = encode(row["created_at"], row["user_id"])
    finally:
        await conn.close()
    await _platform_admin(runtime_dsn, size)
    return org


def _bound(sql: str, org: Org, size: int) -> str:
    """LOAD with its values written in (ids and numbers of ours: nothing to escape), so that
    it runs as one script."""
    values = {"$1": f"'{org.org_id}'::uuid", "$2": f"'{size}'", "$3": str(int(size)),
              "$4": f"'{org.main}'::uuid", "$5": f"'{org.side}'::uuid", "$6": f"'{BOT}'::uuid"}
    for name, value in values.items():
        sql = sql.replace(name, value)
    return sql


async def _platform_admin(runtime_dsn: str, size: int) -> None:
    from archomata.db import create_pool
    from archomata.identity.onboarding import ensure_platform_admin
    from archomata.identity.passwords import PasswordHasher

    pool = await create_pool(runtime_dsn, min_size=1, max_size=1)
    hasher = PasswordHasher(4, 1)
    try:
        await ensure_platform_admin(pool, hasher, email=f"platform{size}@scale.test",
                                    password=PASSWORD)
    finally:
        hasher.close()
        await pool.close()


async def _token(http: aiohttp.ClientSession, url: str, email: str) -> str:
    async with http.post(f"{url}/api/v1/auth/login",
                         json={"email": email, "password": PASSWORD}) as response:
        body = await response.json()
        assert response.status == 200, body
    return str(body["access_token"])


def endpoints(org: Org) -> list[tuple[str, str, bool]]:
    """(name, path and query, whether it is a search) of every list and filter measured."""
    deals = f"/api/v1/accounts/{org.main}/deals"
    return [
        ("members", "/api/v1/org/members", False),
        ("members, middle page", f"/api/v1/org/members?cursor={org.middle}", False),
        ("audit", "/api/v1/audit-logs", False),
        ("audit actor_id (bot)", f"/api/v1/audit-logs?actor_id={BOT}", False),
        ("audit q (1% word)", "/api/v1/audit-logs?q=w7", True),
        ("admin audit q (1% word)", "/api/v1/admin/audit-logs?q=w7", True),
        ("orders", "/api/v1/orders", False),
        ("orders status (1%)", "/api/v1/orders?status=rejected", False),
        ("orders account_id", f"/api/v1/orders?account_id={org.side}", False),
        ("orders account_id+status", f"/api/v1/orders?account_id={org.side}&status=rejected",
         False),
        ("deals", deals, False),
        ("deals symbol (1%)", f"{deals}?symbol=XAUUSD", False),
        ("deals from/to", f"{deals}?from=2024-01-01T00:05:00Z&to=2024-01-01T00:10:00Z", False),
    ]


async def measure(url: str, org: Org, samples: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        org.token = await _token(http, url, f"admin{org.size}@scale.test")
        org.platform_token = await _token(http, url, f"platform{org.size}@scale.test")
        found: dict[str, list[float]] = {}
        for round_no in range(samples):
            for name, path, search in endpoints(org):
                if search and round_no >= SEARCHES:
                    continue
                token = org.platform_token if "/admin/" in path else org.token
                started = time.perf_counter()
                async with http.get(f"{url}{path}",
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                    body = await response.read()
                    assert response.status == 200, (path, response.status, body[:300])
                found.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000",
                        help="comma-separated sizes, the first the reference")
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    import sys

    figures: dict[int, dict[str, float]] = {}
    with stack(bcrypt_rounds=4, ARCHOMATA_DB_POOL_MIN="1", ARCHOMATA_DB_POOL_MAX="1") as env:
        for size in sizes:
            started = time.perf_counter()
            org = asyncio.run(load(env.owner_url, env.environ["ARCHOMATA_DATABASE_URL"], size))
            print(f"loaded {size:,} of each in {time.perf_counter() - started:.1f} s",
                  flush=True)
            # A service started after the load: its plans see the size's statistics.
            with process([sys.executable, "-m", "archomata", "serve"], env.environ,
                         free_port(), env.workdir / f"service-{size}.log") as url:
                figures[size] = asyncio.run(measure(url, org, args.samples))
            for name, p50 in figures[size].items():
                print(f"  {size:>9,} {name:28} p50 {p50:8.2f} ms", flush=True)
    first = sizes[0]
    print(f"\np50 at each size over {first:,} (root: {ROOT.name}; target: within 3x at 10^6):")
    for name in figures[first]:
        ratios = ", ".join(f"{size:,}: {figures[size][name] / figures[first][name]:.2f}x"
                           for size in sizes[1:])
        print(f"  {name:28} {figures[first][name]:8.2f} ms at {first:,}; {ratios}")


if __name__ == "__main__":
    main()
