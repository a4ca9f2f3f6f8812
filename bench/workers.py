"""`serve --workers 2` beside one worker (a plain `serve`), on the same stack, in the same
run: the authorised GET /api/v1/accounts of an org with 50 accounts, wrk at 64
connections, alternating rounds. Target (issue 14): 2 workers >= 1.6x one on this 2-core
machine. wrk runs on the same machine and takes a share of the same cores: both sides pay
for it, so the ratio is the honest figure, the absolute ones are not.

Run: .venv/bin/python -m bench.workers [--rounds 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from archomata.ops.devservers import free_port
from bench.lib import ROOT, median, process, stack, wrk
from bench.org_members import access_token, make_org

ROUTE = "/api/v1/accounts"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk's")
    args = parser.parse_args()
    serve = [sys.executable, "-m", "archomata", "serve"]
    figures: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
    with stack(bcrypt_rounds=4) as env:
        asyncio.run(make_org(env.environ))
        with process(serve, env.environ, free_port(), env.workdir / "one.log") as one, \
                process([*serve, "--workers", "2"], env.environ, free_port(),
                        env.workdir / "two.log") as two:
            headers = {"Authorization": f"Bearer {asyncio.run(access_token(one))}"}
            sides = [("1 worker", one), ("2 workers", two)]
            for round_no in range(1, args.rounds + 1):
                for name, url in sides if round_no % 2 else sides[::-1]:
                    load = wrk(f"{url}{ROUTE}", connections=args.connections,
                               seconds=args.seconds, threads=args.threads, headers=headers)
                    if load.errors:
                        raise SystemExit(f"{name}: {load.errors} non-2xx answers")
                    figures[name].append(load.requests_per_second)
                    print(f"round {round_no} {name:9}: {load.requests_per_second:8.1f} req/s, "
                          f"p50 {load.p50_ms:6.2f} ms, p99 {load.p99_ms:6.2f} ms", flush=True)
    one_rps, two_rps = median(figures["1 worker"]), median(figures["2 workers"])
    paired = [t / o for o, t in zip(figures["1 worker"], figures["2 workers"], strict=True)]
    print(f"\n{ROUTE}: medians over {args.rounds} rounds, {args.connections} connections, "
          f"wrk threads {args.threads}, {os.cpu_count()} cores (root: {ROOT.name}):")
    print(f"  throughput: 2 workers {two_rps:.1f} / 1 worker {one_rps:.1f} req/s = "
          f"{two_rps / one_rps:.2f}x (target >= 1.6x); per round: "
          f"{', '.join(f'{x:.2f}x' for x in paired)}\n", flush=True)


if __name__ == "__main__":
    main()
