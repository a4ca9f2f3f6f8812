"""The audit export's throughput: the service (keyset pages, each in a transaction of its
own, no connection held while it writes) beside a reference doing it the way the service
used to (one transaction and one server-side cursor for the whole stream, holding its
connection throughout), with the same SQL columns and the same encoders, no middleware.

An org with 200,000 entries; each round streams the whole export from both, CSV then
JSON Lines, alternating who goes first. Target: the service within 1.5x of the
reference's time (the price of releasing the connection between pages).

Run: .venv/bin/python -m bench.audit_export [--rounds 3] [--entries 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from uuid import UUID

import aiohttp
import asyncpg
import jwt
from aiohttp import web

from archomata.audit.export_formats import ExportFormat, encoder_for
from archomata.audit.store import CSV_COLUMNS, JSON_COLUMNS, AuditFilter, select_sql
from archomata.ops.devservers import free_port
from bench.lib import bench_admin, median, process, serve, stack

EMAIL = "exports@bench.test"
PASSWORD = "exports-password-123456"
EXPORT = "/api/v1/audit-logs/export"
# Outside the hash chain (the trigger off): the export does not read the hashes.
BULK = """
    alter table audit_log disable trigger user;
    insert into audit_log (org_id, actor_type, actor_id, action, resource_type, resource_id,
                           ip, user_agent, request_id, details, occurred_at, seq, prev_hash,
                           hash)
    select $1, 'user', $2, 'order.created', 'order', md5(g::text)::uuid::text,
           '203.0.113.7', 'Mozilla/5.0 (bench)', md5('r' || g),
           jsonb_build_object('symbol', 'EURUSD', 'volume', '0.10', 'n', g),
           now() - g * interval '1 second', 1000 + g, sha256(''), sha256(g::text::bytea)
    from generate_series(1, $3::int) g;
    alter table audit_log enable trigger user;
"""


async def make_org(environ: dict[str, str], entries: int) -> None:
    account = await bench_admin(environ["ARCHOMATA_DATABASE_URL"], EMAIL, PASSWORD)
    conn = await asyncpg.connect(environ["ARCHOMATA_DATABASE_OWNER_URL"])
    try:
        for statement in BULK.strip().split(";\n"):
            if "$1" in statement:
                await conn.execute(statement, account.org.id, account.user.id, entries)
            elif statement.strip():
                await conn.execute(statement)
        await conn.execute("analyze")
    finally:
        await conn.close()


# The reference: the export as one transaction and one cursor.
POOL = web.AppKey("pool", asyncpg.Pool)
SECRETS = web.AppKey("secrets", dict)


async def reference_export(request: web.Request) -> web.StreamResponse:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    claims = jwt.decode(token, request.app[SECRETS][jwt.get_unverified_header(token)["kid"]],
                        algorithms=["HS256"], audience="archomata-api", issuer="archomata")
    org_id = UUID(claims["org"])
    export_format = ExportFormat(request.query["format"])
    encoder = encoder_for(export_format)
    json_lines = export_format is ExportFormat.JSONL
    sql, params = select_sql(AuditFilter(org_id=org_id),
                             columns=JSON_COLUMNS if json_lines else CSV_COLUMNS)
    response = web.StreamResponse(headers={"Content-Type": encoder.content_type})
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await conn.execute(f"select set_config('app.org_id', '{org_id}', true)")
        await response.prepare(request)
        await response.write(encoder.header())
        cursor = await conn.cursor(sql, *params)
        while batch := await cursor.fetch(1000):
            await response.write(encoder.encode(batch))
    await response.write_eof()
    return response


async def reference_resources(app: web.Application) -> AsyncIterator[None]:
    app[POOL] = await asyncpg.create_pool(os.environ["ARCHOMATA_DATABASE_URL"], min_size=1,
                                          max_size=4)
    yield
    await app[POOL].close()


def run_reference() -> None:
    app = web.Application()
    app[SECRETS] = {kid: secret for kid, _, secret in
                    (e.partition(":") for e in os.environ["ARCHOMATA_JWT_SECRETS"].split(","))}
    app.cleanup_ctx.append(reference_resources)
    app.router.add_get("/health/live", lambda r: web.json_response({"status": "ok"}))
    app.router.add_get(EXPORT, reference_export)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["ARCHOMATA_PORT"]), print=None,
                access_log=None)


async def access_token(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.post(
            f"{url}/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}) as response:
        return str((await response.json())["access_token"])


async def stream(url: str, export_format: str, token: str) -> tuple[float, int]:
    """Seconds to receive the whole export, and its bytes."""
    started, received = time.monotonic(), 0
    async with aiohttp.ClientSession() as session, session.get(
            f"{url}{EXPORT}?format={export_format}",
            headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        async for chunk in response.content.iter_chunked(2**16):
            received += len(chunk)
    return time.monotonic() - started, received


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    with stack(bcrypt_rounds=4) as env:
        asyncio.run(make_org(env.environ, args.entries))
        reference_cmd = [sys.executable, "-m", "bench.audit_export", "--reference"]
        with serve(env.environ, env.workdir) as service, \
                process(reference_cmd, env.environ, free_port(),
                        env.workdir / "reference.log") as reference:
            token = asyncio.run(access_token(service))
            for export_format in ("csv", "jsonl"):
                times: dict[str, list[float]] = {"service": [], "reference": []}
                for round_no in range(1, args.rounds + 1):
                    order = [("reference", reference), ("service", service)]
                    for name, url in order if round_no % 2 else order[::-1]:
                        seconds, size = asyncio.run(stream(url, export_format, token))
                        times[name].append(seconds)
                        print(f"{export_format} round {round_no} {name:9}: {seconds:6.2f} s, "
                              f"{size / 2**20:6.1f} MiB", flush=True)
                s, r = median(times["service"]), median(times["reference"])
                print(f"\n{export_format}, {args.entries:,} entries, medians of {args.rounds}: "
                      f"service {s:.2f} s / reference {r:.2f} s = {s / r:.2f}x "
                      "(target <= 1.5x)\n", flush=True)


if __name__ == "__main__":
    if "--reference" in sys.argv:
        run_reference()
    else:
        main()
