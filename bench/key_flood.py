"""A flood of wrong secrets for one API key id must not slow anyone else down.

Four client addresses (X-Forwarded-For from loopback, a trusted proxy here) send random
secrets for the key id of a real agent, at a fixed rate each, as an attacker who knows
the id would. Measured in one run, alternating idle and flood rounds (medians, ratios):

- the valid agent's heartbeat latency (its key verified and cached);
- a user's login latency (one bcrypt at the configured cost).

Target: both within 2x of their idle latency during the flood. Without the key-id
throttle every wrong secret cost one bcrypt (the issue saw a login go from 0.3 s to 3.7 s
at 10 wrong secrets a second from one address); with it, a key id spends at most
KEY_FREE_TRIES bcrypts per window on secrets not proven right.

Run: .venv/bin/python -m bench.key_flood [--rounds 3] [--rate 25] [--heartbeats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import Manager
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archomata.bridge.api_keys import parse
from bench.bridge import EMAIL, PASSWORD, make_desk, make_org
from bench.lib import median, serve, stack

ADDRESSES = [f"203.0.113.{n}" for n in range(1, 5)]
HEARTBEAT = "/api/v1/bridge/heartbeat"
BEAT_BODY = orjson.dumps({"version": "1.0.0"})


# --- the flood, in its own process -------------------------------------------------------

async def _flood(url: str, key_id: str, rate: float, stop: Any) -> dict[str, int]:
    statuses: Counter[int] = Counter()
    in_flight = asyncio.Semaphore(256)

    async def one(http: aiohttp.ClientSession, address: str) -> None:
        key = f"amk_{key_id}_{secrets.token_urlsafe(32)}"
        try:
            async with http.post(url + HEARTBEAT, data=BEAT_BODY, headers={
                    "X-API-Key": key, "X-Forwarded-For": address,
                    "Content-Type": "application/json"}) as response:
                await response.read()
                statuses[response.status] += 1
        except aiohttp.ClientError:
            statuses[0] += 1
        finally:
            in_flight.release()

    async def sender(http: aiohttp.ClientSession, address: str) -> None:
        interval = 1 / rate
        next_at = time.monotonic()
        while not stop.is_set():
            await in_flight.acquire()  # open loop, but never more than 256 pending
            tasks.add(asyncio.create_task(one(http, address)))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:
        await asyncio.gather(*(sender(http, a) for a in ADDRESSES))
        await asyncio.gather(*tasks)
    return {str(k): v for k, v in statuses.items()}


def flood(url: str, key_id: str, rate: float, stop: Any) -> dict[str, int]:
    return asyncio.run(_flood(url, key_id, rate, stop))


# --- the measurements ------------------------------------------------------------------

async def _latencies(url: str, api_key: str, heartbeats: int, logins: int
                     ) -> tuple[float, float]:
    """Median heartbeat and login latencies in ms, one request at a time (a failed one
    counts with its latency, and is reported)."""
    beat_ms, login_ms = [], []
    failed: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        for _ in range(heartbeats):
            started = time.perf_counter()
            async with http.post(url + HEARTBEAT, data=BEAT_BODY, headers={
                    "X-API-Key": api_key, "Content-Type": "application/json"}) as response:
                await response.read()
            if response.status != 200:
                failed[f"heartbeat {response.status}"] += 1
            beat_ms.append((time.perf_counter() - started) * 1000)
        for _ in range(logins):
            started = time.perf_counter()
            async with http.post(f"{url}/api/v1/auth/login",
                                 json={"email": EMAIL, "password": PASSWORD}) as response:
                await response.read()
            if response.status != 200:
                failed[f"login {response.status}"] += 1
            login_ms.append((time.perf_counter() - started) * 1000)
    if failed:
        print(f"  failed requests: {dict(failed)}", flush=True)
    return statistics.median(beat_ms), statistics.median(login_ms)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=25.0,
                        help="wrong secrets per second from each of the 4 addresses")
    parser.add_argument("--heartbeats", type=int, default=200)
    parser.add_argument("--logins", type=int, default=8)
    args = parser.parse_args()
    with stack(bcrypt_rounds=12, ARCHOMATA_TRUSTED_PROXIES="127.0.0.1/32") as env:
        asyncio.run(make_org(env.environ["ARCHOMATA_DATABASE_URL"]))
        with serve(env.environ, env.workdir) as url:
            desk = asyncio.run(make_desk(url))  # its login upgrades the hash to cost 12
            parsed = parse(desk["api_key"])
            assert parsed is not None
            idle: list[tuple[float, float]] = []
            flooded: list[tuple[float, float]] = []
            asyncio.run(_latencies(url, desk["api_key"], 20, 1))  # warm-up: caches, pools
            # A Manager's event: the flood process sees it being set.
            with ProcessPoolExecutor(max_workers=1) as load, Manager() as manager:
                for round_no in range(1, args.rounds + 1):
                    idle.append(asyncio.run(_latencies(url, desk["api_key"], args.heartbeats,
                                                       args.logins)))
                    stop = manager.Event()
                    running: Future[dict[str, int]] = load.submit(
                        flood, url, parsed[0], args.rate, stop)
                    time.sleep(1.0)  # let the flood build before measuring under it
                    flooded.append(asyncio.run(_latencies(url, desk["api_key"],
                                                          args.heartbeats, args.logins)))
                    stop.set()
                    statuses = running.result()
                    print(f"round {round_no}: idle heartbeat {idle[-1][0]:.2f} ms, login "
                          f"{idle[-1][1]:.0f} ms; flood heartbeat {flooded[-1][0]:.2f} ms, "
                          f"login {flooded[-1][1]:.0f} ms; flood answers {statuses}",
                          flush=True)
    report(idle, flooded, args)


def report(idle: list[tuple[float, float]], flooded: list[tuple[float, float]],
           args: argparse.Namespace) -> None:
    beat_idle, beat_flood = median([r[0] for r in idle]), median([r[0] for r in flooded])
    login_idle, login_flood = median([r[1] for r in idle]), median([r[1] for r in flooded])
    print(f"\nmedians over {args.rounds} rounds, a flood of {args.rate * len(ADDRESSES):.0f} "
          f"wrong secrets/s for one key id from {len(ADDRESSES)} addresses, bcrypt cost 12:")
    print(f"  heartbeat (valid key): idle {beat_idle:.2f} ms, flood {beat_flood:.2f} ms = "
          f"{beat_flood / beat_idle:.2f}x (target <= 2x)")
    print(f"  login: idle {login_idle:.0f} ms, flood {login_flood:.0f} ms = "
          f"{login_flood / login_idle:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
