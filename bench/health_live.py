"""The liveness probe through the whole stack beside a bare aiohttp hello in the same run.

GET /health/live of the service (every middleware, as `archomata serve` runs it), once
plain and once carrying a valid bearer token (a probe or a load balancer that forwards
whatever it was given), beside GET /health/live of bench/reference_app.py: one
`web.json_response({"status": "ok"})` with no middleware, uvloop, no access log. wrk at
64 connections, rounds alternating who goes first. Target: throughput >= 0.7x the hello
in both cases. The route's policy (archomata.access.route_policy, `operations` with
`probe`) has the outermost middleware (archomata/http/middlewares/probe.py) answer it
with the request id and the security headers, past every other layer.

Run: .venv/bin/python -m bench.health_live [--rounds 5] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from archomata.ops.devservers import free_port
from bench.lib import ROOT, median, process, ratio_line, serve, stack, wrk
from bench.org_members import access_token, make_org

ROUTE = "/health/live"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with stack(bcrypt_rounds=4) as env:
        asyncio.run(make_org(env.environ))
        with serve(env.environ, env.workdir) as service, \
                process([sys.executable, "-m", "bench.reference_app"], env.environ,
                        free_port(), env.workdir / "reference.log") as hello:
            token = {"Authorization": f"Bearer {asyncio.run(access_token(service))}"}
            runs = [("hello", hello, {}), ("service", service, {}),
                    ("service+token", service, token)]
            figures: dict[str, list[float]] = {name: [] for name, _, _ in runs}
            for round_no in range(1, args.rounds + 1):
                for name, url, headers in runs if round_no % 2 else runs[::-1]:
                    load = wrk(f"{url}{ROUTE}", connections=args.connections,
                               seconds=args.seconds, headers=headers)
                    if load.errors:
                        raise SystemExit(f"{name}: {load.errors} non-2xx answers")
                    figures[name].append(load.requests_per_second)
                    print(f"round {round_no} {name:14}: {load.requests_per_second:8.1f} req/s, "
                          f"p50 {load.p50_ms:6.2f} ms, p99 {load.p99_ms:6.2f} ms", flush=True)
    med = {name: median(values) for name, values in figures.items()}
    print(f"\n{ROUTE}: medians over {args.rounds} rounds, {args.connections} connections "
          f"(root: {ROOT.name}):")
    for name in ("service", "service+token"):
        paired = [s / h for s, h in zip(figures[name], figures["hello"], strict=True)]
        print("  " + ratio_line(f"{name} req/s", med[name], med["hello"], ">= 0.7x")
              + f"; per round: {', '.join(f'{x:.2f}x' for x in paired)}")


if __name__ == "__main__":
    main()
