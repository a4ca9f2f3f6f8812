"""`archomata backup` beside plain `pg_dump` to /dev/null, in the same run: a database of
at least 200 MB (a filler table beside the migrated schema), rounds alternating who goes
first. Targets (issue 14): backup's time <= 1.25x pg_dump's, its peak RSS < 64 MB (the
archomata process's own, read from getrusage in it; pg_dump's memory is pg_dump's).

Run: .venv/bin/python -m bench.backup [--rounds 3] [--megabytes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import subprocess
import sys
import time

import asyncpg

from archomata.ops.cli_backup import pg_tool
from archomata.ops.database_urls import libpq_target
from bench.lib import median, stack

# Runs one backup to stdout (sent to /dev/null) and reports this process's peak RSS.
BACKUP = """
import resource, sys
from archomata.ops.cli_backup import backup
backup("-")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


async def fill(owner_url: str, megabytes: int) -> int:
    conn = await asyncpg.connect(owner_url)
    try:
        await conn.execute("create table bench_filler (id bigint, payload text)")
        rows = megabytes * 1024 * 1024 // 300
        await conn.execute(
            "insert into bench_filler select n, md5(random()::text) || md5(random()::text)"
            " || repeat(md5(n::text), 6) from generate_series(1, $1) n", rows)
        size: int = await conn.fetchval("select pg_database_size(current_database())")
        return size
    finally:
        await conn.close()


def timed_pg_dump(environ: dict[str, str], owner_url: str) -> float:
    with libpq_target(owner_url, environ) as (target, env), open("/dev/null", "wb") as sink:
        start = time.perf_counter()
        subprocess.run([pg_tool("pg_dump", environ), "--format=custom", f"--dbname={target}"],
                       stdout=sink, env=env, check=True)
        return time.perf_counter() - start


def timed_backup(environ: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    with open("/dev/null", "wb") as sink:
        done = subprocess.run([sys.executable, "-c", BACKUP], stdout=sink,
                              stderr=subprocess.PIPE, env=environ, check=True, text=True)
    elapsed = time.perf_counter() - start
    return elapsed, int(done.stderr.strip().splitlines()[-1])  # KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=200)
    args = parser.parse_args()
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    with stack(ARCHOMATA_BACKUP_KEY=key) as s:
        size = asyncio.run(fill(s.owner_url, args.megabytes))
        print(f"database: {size / 1e6:.0f} MB")
        dumps, backups, rss = [], [], []
        for round_ in range(args.rounds):
            if round_ % 2:
                dumps.append(timed_pg_dump(s.environ, s.owner_url))
                took, peak = timed_backup(s.environ)
            else:
                took, peak = timed_backup(s.environ)
                dumps.append(timed_pg_dump(s.environ, s.owner_url))
            backups.append(took)
            rss.append(peak / 1024)
            print(f"round {round_ + 1}: pg_dump {dumps[-1]:.2f} s, backup {took:.2f} s, "
                  f"backup peak RSS {rss[-1]:.1f} MB")
        print(f"median: pg_dump {median(dumps):.2f} s, backup {median(backups):.2f} s, "
              f"peak RSS max {max(rss):.1f} MB (target < 64 MB)")
        print(f"backup time / pg_dump time = {median(backups) / median(dumps):.2f}x "
              "(target <= 1.25x)")
        return 0 if max(rss) < 64 and median(backups) <= 1.25 * median(dumps) else 1


if __name__ == "__main__":
    sys.exit(main())
