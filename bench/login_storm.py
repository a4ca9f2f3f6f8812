"""Login storm: bcrypt must neither starve the event loop nor idle the cores.

Measures, in one run, alternating rounds:
- the p99 latency of GET /health/live with one client, idle and while 16 clients log in
  as fast as they can (target: storm p99 < 3x idle p99);
- logins per second against what one core of bcrypt at the configured cost allows
  (target: >= 0.9x).

Run: .venv/bin/python -m bench.login_storm [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

from archomata.audit import AuditContext
from archomata.db import create_pool
from archomata.identity.onboarding import create_user_with_org
from archomata.identity.passwords import hash_sync, verify_sync
from bench.lib import Load, median, serve, stack, wrk

EMAIL = "storm@bench.test"
PASSWORD = "storm-password-123456"


def one_core_bcrypt_per_second(rounds: int, samples: int = 6) -> float:
    password_hash = hash_sync(PASSWORD, rounds)
    started = time.perf_counter()
    for _ in range(samples):
        verify_sync(PASSWORD, password_hash)
    return samples / (time.perf_counter() - started)


async def make_user(runtime_url: str, rounds: int) -> None:
    pool = await create_pool(runtime_url, min_size=1, max_size=1)
    try:
        await create_user_with_org(pool, AuditContext.system(), email=EMAIL, name="Storm",
                                   password_hash=hash_sync(PASSWORD, rounds),
                                   org_name="Storm Org", verified=True)
    finally:
        await pool.close()


def login_script(directory: Path) -> Path:
    script = directory / "login.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{json.dumps({'email': EMAIL, 'password': PASSWORD})}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n')
    return script


def storm(url: str, seconds: int, script: Path) -> tuple[Load, Load]:
    """Health latency measured while 16 clients log in, both for `seconds`."""
    result: dict[str, Load] = {}

    def logins() -> None:
        result["login"] = wrk(f"{url}/api/v1/auth/login", connections=16, threads=1,
                              seconds=seconds, script=script)

    thread = threading.Thread(target=logins)
    thread.start()
    time.sleep(0.5)  # let the storm build before measuring under it
    health = wrk(f"{url}/health/live", connections=1, threads=1, seconds=seconds - 1)
    thread.join()
    return health, result["login"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds-bcrypt", type=int, default=12, dest="cost")
    args = parser.parse_args()
    with stack(bcrypt_rounds=args.cost) as env, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(make_user(env.environ["ARCHOMATA_DATABASE_URL"], args.cost))
        script = login_script(Path(tmp))
        idle_p99, storm_p99, logins, capacity = [], [], [], []
        with serve(env.environ, env.workdir) as url:
            for round_no in range(1, args.rounds + 1):
                idle = wrk(f"{url}/health/live", connections=1, threads=1,
                           seconds=args.seconds - 1)
                health, login = storm(url, args.seconds, script)
                core = one_core_bcrypt_per_second(args.cost)
                idle_p99.append(idle.p99_ms)
                storm_p99.append(health.p99_ms)
                logins.append(login.requests_per_second)
                capacity.append(core)
                print(f"round {round_no}: idle p99 {idle.p99_ms:.2f} ms, storm p99 "
                      f"{health.p99_ms:.2f} ms, logins {login.requests_per_second:.2f}/s "
                      f"({login.errors} non-2xx), one core of bcrypt {core:.2f}/s", flush=True)
        print(f"\nmedians over {args.rounds} rounds, bcrypt cost {args.cost}:")
        print(f"  /health/live p99: idle {median(idle_p99):.2f} ms, during storm "
              f"{median(storm_p99):.2f} ms = {median(storm_p99) / median(idle_p99):.2f}x "
              "(target < 3x)")
        print(f"  logins: {median(logins):.2f}/s vs one core of bcrypt {median(capacity):.2f}/s"
              f" = {median(logins) / median(capacity):.2f}x (target >= 0.9x)")


if __name__ == "__main__":
    main()
