"""The authorised org-scoped lists, through every middleware, the guard and row-level
security, beside a bare endpoint doing the same JWT check, one Redis GET and the same
SELECT (bench/reference_app.py).

GET /api/v1/org/members of an org with 50 members, and GET /api/v1/accounts of an org
with 50 accounts, wrk at 64 connections, alternating rounds. Targets (issue 12): throughput >= 0.9x
the reference, p99 <= 1.2x.

Read the figures knowing what differs: every wrk connection sends the same token, as an
SPA does for its 15 minutes, so the service's cache of verified claims
(tokens.VerifiedTokens) serves it, while the reference checks the signature each time;
and the service hands out pool connections first come first served, while the
reference's asyncpg pool lets newcomers overtake, which is most of the p99 difference.

Run: .venv/bin/python -m bench.org_members [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

from archomata.ops.devservers import free_port
from bench.lib import ROOT, bench_admin, median, process, serve, stack, wrk

EMAIL = "members@bench.test"
PASSWORD = "members-password-123456"
MEMBERS = 50

ADD_MEMBERS = """
    with new_users as (
        insert into users (email, email_normalized, name, email_verified_at)
        select 'm' || i || '@bench.test', 'm' || i || '@bench.test', 'Member ' || i, now()
        from generate_series(1, $2) i
        returning id
    )
    insert into memberships (org_id, user_id, org_role) select $1, id, 'member' from new_users
"""
ADD_ACCOUNTS = """
    insert into accounts (org_id, name, broker, server, login, environment, balance, equity)
    select $1, 'Account ' || i, 'Broker', 'Server-1', 100000 + i, 'demo', 10000.50, 10100.25
    from generate_series(1, $2) i
"""
ROUTES = ("/api/v1/org/members", "/api/v1/accounts")


async def make_org(environ: dict[str, str]) -> None:
    account = await bench_admin(environ["ARCHOMATA_DATABASE_URL"], EMAIL, PASSWORD)
    import asyncpg

    conn = await asyncpg.connect(environ["ARCHOMATA_DATABASE_OWNER_URL"])
    try:
        await conn.execute(ADD_MEMBERS, account.org.id, MEMBERS - 1)
        await conn.execute(ADD_ACCOUNTS, account.org.id, MEMBERS)
        await conn.execute("analyze")
    finally:
        await conn.close()


async def access_token(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/v1/auth/login",
                                json={"email": EMAIL, "password": PASSWORD}) as response:
            body = await response.json()
        async with session.get(f"{url}/api/v1/org/members",
                               headers={"Authorization": f"Bearer {body['access_token']}"}
                               ) as check:
            assert len((await check.json())["items"]) == MEMBERS, await check.text()
    return body["access_token"]


def measure(route: str, service: str, reference: str, headers: dict[str, str],
            args: argparse.Namespace) -> None:
    figures: dict[str, list[tuple[float, float, float]]] = {"service": [], "reference": []}
    for round_no in range(1, args.rounds + 1):
        # Who goes first alternates, so a machine growing busier or quieter during the run
        # does not always favour the same side.
        order = [("reference", reference), ("service", service)]
        for name, url in order if round_no % 2 else order[::-1]:
            load = wrk(f"{url}{route}", connections=args.connections, seconds=args.seconds,
                       headers=headers)
            if load.errors:
                raise SystemExit(f"{name} {route}: {load.errors} non-2xx answers")
            figures[name].append((load.requests_per_second, load.p50_ms, load.p99_ms))
            print(f"{route} round {round_no} {name:9}: {load.requests_per_second:8.1f} req/s, "
                  f"p50 {load.p50_ms:6.2f} ms, p99 {load.p99_ms:6.2f} ms", flush=True)
    med = {name: tuple(median([f[i] for f in rows]) for i in range(3))
           for name, rows in figures.items()}
    s, r = med["service"], med["reference"]
    print(f"\n{route}: medians over {args.rounds} rounds, {args.connections} connections, "
          f"{MEMBERS} items (root: {ROOT.name}):")
    paired = [sf[0] / rf[0] for sf, rf in zip(figures["service"], figures["reference"],
                                              strict=True)]
    print(f"  throughput: service {s[0]:.1f} / reference {r[0]:.1f} req/s = "
          f"{s[0] / r[0]:.2f}x (target >= 0.9x); per round: "
          f"{', '.join(f'{x:.2f}x' for x in paired)}")
    print(f"  p50: service {s[1]:.2f} / reference {r[1]:.2f} ms = {s[1] / r[1]:.2f}x")
    print(f"  p99: service {s[2]:.2f} / reference {r[2]:.2f} ms = {s[2] / r[2]:.2f}x "
          "(target <= 1.2x)\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--route", choices=ROUTES, action="append",
                        help="measure only this route (repeatable); default: all")
    args = parser.parse_args()
    with stack(bcrypt_rounds=4) as env:
        asyncio.run(make_org(env.environ))
        reference_cmd = [sys.executable, "-m", "bench.reference_app"]
        with serve(env.environ, env.workdir) as service, \
                process(reference_cmd, env.environ, free_port(),
                        env.workdir / "reference.log") as reference:
            headers = {"Authorization": f"Bearer {asyncio.run(access_token(service))}"}
            for route in args.route or ROUTES:
                measure(route, service, reference, headers, args)


if __name__ == "__main__":
    main()
