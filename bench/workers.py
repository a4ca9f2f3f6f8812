"""`serve --workers 2` beside one worker (a plain `serve`), on the same stack, in the same
run: the authorised GET /api/v1/accounts of an org with 50 accounts, wrk at 64
connections, alternating rounds.

The figure is requests per CPU-second of the service's processes (user + system time of
the process and, with workers, of the parent and each worker, read from /proc/<pid>/stat
before and after each round's load): what a request costs the service, which more
workers must not raise. Target (issue 23): 2 workers >= 0.9x one, proof that the
workers do not contend (for a lock, the pool, a shared cache). Throughput is printed too,
for information only: wrk, PostgreSQL and Redis share this machine's cores with the
service, so more processes cannot show more requests a second on 2 cores.

Run: .venv/bin/python -m bench.workers [--rounds 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from archomata.ops.devservers import free_port
from bench.lib import ROOT, Load, median, spawned, stack, wrk
from bench.org_members import access_token, make_org

ROUTE = "/api/v1/accounts"
TICKS = os.sysconf("SC_CLK_TCK")
TARGET = 0.9


def family(pid: int) -> list[int]:
    """The process and its children (a `--workers` parent's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes have used so far."""
    total = 0
    for pid in pids:
        # The fields after the command (in parentheses, which may hold spaces): utime is
        # the 14th field of the line, stime the 15th.
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def measured(url: str, pid: int, headers: dict[str, str],
             args: argparse.Namespace) -> tuple[Load, float]:
    """One round of load and the CPU seconds the service spent on it."""
    pids = family(pid)
    before = cpu_seconds(pids)
    load = wrk(f"{url}{ROUTE}", connections=args.connections, seconds=args.seconds,
               threads=args.threads, headers=headers)
    if family(pid) != pids:
        raise SystemExit("a worker was replaced during the round: its CPU is lost")
    return load, cpu_seconds(pids) - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk's")
    args = parser.parse_args()
    serve = [sys.executable, "-m", "archomata", "serve"]
    per_cpu: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
    rps: dict[str, list[float]] = {"1 worker": [], "2 workers": []}
    with stack(bcrypt_rounds=4) as env:
        asyncio.run(make_org(env.environ))
        with spawned(serve, env.environ, free_port(), env.workdir / "one.log") as one, \
                spawned([*serve, "--workers", "2"], env.environ, free_port(),
                        env.workdir / "two.log") as two:
            headers = {"Authorization": f"Bearer {asyncio.run(access_token(one[0]))}"}
            sides = [("1 worker", one), ("2 workers", two)]
            for round_no in range(1, args.rounds + 1):
                for name, (url, proc) in sides if round_no % 2 else sides[::-1]:
                    load, cpu = measured(url, proc.pid, headers, args)
                    if load.errors:
                        raise SystemExit(f"{name}: {load.errors} non-2xx answers")
                    per_cpu[name].append(load.requests / cpu)
                    rps[name].append(load.requests_per_second)
                    print(f"round {round_no} {name:9}: {load.requests / cpu:8.1f} req/CPU-s "
                          f"({load.requests} requests, {cpu:5.2f} CPU-s), "
                          f"{load.requests_per_second:7.1f} req/s, p50 {load.p50_ms:6.2f} ms, "
                          f"p99 {load.p99_ms:6.2f} ms", flush=True)
    one_cpu, two_cpu = median(per_cpu["1 worker"]), median(per_cpu["2 workers"])
    paired = [t / o for o, t in zip(per_cpu["1 worker"], per_cpu["2 workers"], strict=True)]
    print(f"\n{ROUTE}: medians over {args.rounds} rounds, {args.connections} connections, "
          f"wrk threads {args.threads}, {os.cpu_count()} cores (root: {ROOT.name}):")
    print(f"  requests per CPU-second of the service: 2 workers {two_cpu:.1f} / 1 worker "
          f"{one_cpu:.1f} = {two_cpu / one_cpu:.2f}x (target >= {TARGET}x); per round: "
          f"{', '.join(f'{x:.2f}x' for x in paired)}")
    print(f"  throughput (information): 2 workers {median(rps['2 workers']):.1f} / 1 worker "
          f"{median(rps['1 worker']):.1f} req/s\n", flush=True)


if __name__ == "__main__":
    main()
