"""The MT5 bridge under load, in one run, alternating rounds (medians and ratios):

- requests per second of the API-key bridge heartbeat (POST /api/v1/bridge/heartbeat:
  key check from the cache, one Redis round trip, one UPDATE) beside a JWT-authenticated
  GET of similar work (GET /api/v1/agents/{id}: token check, one Redis round trip, one
  SELECT). Target: heartbeat >= 0.9x.
- deals per second ingested in 500-deal batches beside 1-deal batches (every deal new).
  Target: >= 25x.

The service runs as `archomata serve` (one process) on throwaway PostgreSQL and Redis;
the load comes from aiohttp client tasks in another process.

Run: .venv/bin/python bench/bridge.py [--rounds 3] [--seconds 6] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archomata.audit import AuditContext
from archomata.db import create_pool
from archomata.identity.onboarding import create_user_with_org
from archomata.identity.passwords import hash_sync
from bench.lib import median, serve, stack

EMAIL = "bridge@bench.test"
PASSWORD = "bridge-password-123456"
LOGIN = 80001


@dataclass(frozen=True)
class Target:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    deals_per_request: int = 0  # > 0: a deal batch, every request with new tickets
    body: bytes | None = None


@dataclass(frozen=True)
class Result:
    requests: int
    items: int
    errors: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds


# --- the load process ------------------------------------------------------------------

_tickets = itertools.count(1)


def _deals(count: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    return orjson.dumps({"deals": [
        {"ticket": t, "order_ticket": t, "position_id": t, "symbol": "EURUSD", "side": "buy",
         "volume": "0.10", "price": "1.08512", "profit": "1.25", "commission": "-0.70",
         "swap": "0.00", "executed_at": now}
        for t in itertools.islice(_tickets, count)]})


async def _worker(session: aiohttp.ClientSession, url: str, target: Target, deadline: float,
                  tally: list[int]) -> None:
    while time.monotonic() < deadline:
        body = _deals(target.deals_per_request) if target.deals_per_request else target.body
        async with session.request(target.method, url + target.path, data=body,
                                   headers=target.headers) as response:
            payload = await response.read()
        if response.status >= 300:
            tally[2] += 1
            continue
        tally[0] += 1
        if target.deals_per_request:
            tally[1] += orjson.loads(payload)["inserted"]


async def _drive(url: str, target: Target, connections: int, seconds: float) -> Result:
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        tally = [0, 0, 0]
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(_worker(session, url, target, deadline, tally)
                               for _ in range(connections)))
        return Result(tally[0], tally[1], tally[2], time.monotonic() - started)


def drive(url: str, target: Target, connections: int, seconds: float) -> Result:
    """Runs in the load process: `connections` client tasks for `seconds`."""
    try:
        import uvloop
        return uvloop.run(_drive(url, target, connections, seconds))
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return asyncio.run(_drive(url, target, connections, seconds))


# --- set-up ----------------------------------------------------------------------------

async def make_org(runtime_url: str) -> None:
    pool = await create_pool(runtime_url, min_size=1, max_size=1)
    try:
        await create_user_with_org(pool, AuditContext.system(), email=EMAIL, name="Bench",
                                   password_hash=hash_sync(PASSWORD, 4),
                                   org_name="Bridge Bench", verified=True)
    finally:
        await pool.close()


async def make_desk(url: str) -> dict[str, str]:
    """Signs in, creates an agent and an account assigned to it; returns the credentials
    and ids the targets need."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/v1/auth/login",
                             json={"email": EMAIL, "password": PASSWORD}) as response:
            token = (await response.json())["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with http.post(f"{url}/api/v1/agents", json={"name": "Bench"},
                             headers=auth) as response:
            created = await response.json()
        async with http.post(f"{url}/api/v1/accounts", headers=auth, json={
                "name": "Bench", "broker": "B", "server": "S", "login": LOGIN,
                "environment": "demo", "agent_id": created["agent"]["id"]}) as response:
            assert response.status == 201, await response.text()
    return {"token": token, "api_key": created["api_key"], "agent_id": created["agent"]["id"]}


def targets(desk: dict[str, str]) -> dict[str, Target]:
    json_type = {"Content-Type": "application/json"}
    agent = {"X-API-Key": desk["api_key"], **json_type}
    return {
        "heartbeat (API key)": Target("heartbeat", "POST", "/api/v1/bridge/heartbeat", agent,
                                      body=orjson.dumps({"version": "1.0.0"})),
        "GET agent (JWT)": Target("jwt", "GET", f"/api/v1/agents/{desk['agent_id']}",
                                  {"Authorization": f"Bearer {desk['token']}"}),
        "deals x500": Target("deals500", "POST", f"/api/v1/bridge/accounts/{LOGIN}/deals",
                             agent, deals_per_request=500),
        "deals x1": Target("deals1", "POST", f"/api/v1/bridge/accounts/{LOGIN}/deals",
                           agent, deals_per_request=1),
    }


# --- the run ---------------------------------------------------------------------------

def measure(url: str, desk: dict[str, str], args: argparse.Namespace) -> dict[str, list[Result]]:
    plan = targets(desk)
    connections = {"deals x500": args.batch_connections}
    results: dict[str, list[Result]] = {name: [] for name in plan}
    with ProcessPoolExecutor(max_workers=1) as load:
        for target in plan.values():  # warm-up: the key cache, the pools
            load.submit(drive, url, target, 4, 1.0).result()
        for round_no in range(1, args.rounds + 1):
            order = list(plan.items()) if round_no % 2 else list(reversed(plan.items()))
            for name, target in order:
                result = load.submit(drive, url, target, connections.get(name, args.connections),
                                     args.seconds).result()
                if result.errors:
                    raise SystemExit(f"{name}: {result.errors} failed requests")
                results[name].append(result)
                extra = (f", {result.items_per_second:9.0f} deals/s"
                         if target.deals_per_request else "")
                print(f"round {round_no} {name:20}: {result.per_second:8.0f} req/s{extra}",
                      flush=True)
    return results


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    rps = {name: median([r.per_second for r in rows]) for name, rows in results.items()}
    dps = {name: median([r.items_per_second for r in rows]) for name, rows in results.items()}
    heartbeat, jwt_get = rps["heartbeat (API key)"], rps["GET agent (JWT)"]
    batch, single = dps["deals x500"], dps["deals x1"]
    print(f"\nmedians over {args.rounds} rounds of {args.seconds} s "
          f"({args.connections} connections; {args.batch_connections} for 500-deal batches):")
    print(f"  heartbeat (API key) {heartbeat:8.0f} req/s / GET agent (JWT) {jwt_get:8.0f} req/s "
          f"= {heartbeat / jwt_get:.2f}x (target >= 0.9x)")
    print(f"  deals in 500-deal batches {batch:8.0f} deals/s / in 1-deal batches "
          f"{single:6.0f} deals/s = {batch / single:.1f}x (target >= 25x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch-connections", type=int, default=4)
    args = parser.parse_args()
    with stack(bcrypt_rounds=12) as env:
        asyncio.run(make_org(env.environ["ARCHOMATA_DATABASE_URL"]))
        with serve(env.environ, env.workdir) as url:
            desk = asyncio.run(make_desk(url))
            results = measure(url, desk, args)
    report(results, args)


if __name__ == "__main__":
    main()
