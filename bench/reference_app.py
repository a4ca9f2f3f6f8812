"""The reference for bench/org_members.py: a bare aiohttp endpoint doing only what the
real route cannot avoid: the same JWT check, one Redis GET and the same SELECT (in the
same row-level-security transaction), with no middleware.

Run by the benchmark as `python -m bench.reference_app` with the service's environment.
"""

from __future__ import annotations

import json
import os
from uuid import UUID

import asyncpg
import jwt
from aiohttp import web
from redis.asyncio import Redis

from archomata.orgs.store.members import LIST_PAGE
from archomata.trading.store.accounts import LIST_PAGE as ACCOUNTS_PAGE

POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
KEYS = web.AppKey("keys", dict)


async def _org_rows(request: web.Request, sql: str, *args: object) -> list[asyncpg.Record]:
    """The same JWT check, one Redis call and the same SELECT in the same RLS transaction."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    kid = jwt.get_unverified_header(token)["kid"]
    claims = jwt.decode(token, request.app[KEYS][kid], algorithms=["HS256"],
                        audience="archomata-api", issuer="archomata")
    if not await request.app[REDIS].hget(f"sess:{claims['sid']}", "user_id"):
        raise web.HTTPUnauthorized()
    org_id = UUID(claims["org"])
    async with request.app[POOL].acquire() as conn:
        await conn.execute(f"BEGIN; SELECT set_config('app.org_id', '{org_id}', true)")
        rows = await conn.fetch(sql, org_id, *args)
        await conn.execute("COMMIT")
    return rows


def _text(value: object) -> object:
    return None if value is None else str(value)


async def accounts(request: web.Request) -> web.Response:
    rows = await _org_rows(request, ACCOUNTS_PAGE, None, None, 51)
    items = [{"id": str(r["id"]), "agent_id": _text(r["agent_id"]), "name": r["name"],
              "broker": r["broker"], "server": r["server"], "login": r["login"],
              "environment": r["environment"], "has_credentials": r["has_credentials"],
              "balance": _text(r["balance"]), "equity": _text(r["equity"]),
              "margin": _text(r["margin"]), "free_margin": _text(r["free_margin"]),
              "currency": r["currency"],
              "state_updated_at": r["state_updated_at"] and r["state_updated_at"].isoformat(),
              "created_at": r["created_at"].isoformat(),
              "updated_at": r["updated_at"].isoformat()} for r in rows[:50]]
    return web.json_response({"items": items, "next_cursor": None}, dumps=json.dumps)


async def members(request: web.Request) -> web.Response:
    rows = await _org_rows(request, LIST_PAGE, 51)
    items = [{"user_id": str(r["user_id"]), "email": r["email"], "name": r["name"],
              "org_role": r["org_role"], "roles": r["roles"], "groups": r["groups"],
              "joined_at": r["joined_at"].isoformat()} for r in rows[:50]]
    return web.json_response({"items": items, "next_cursor": None}, dumps=json.dumps)


async def resources(app: web.Application) -> object:
    app[POOL] = await asyncpg.create_pool(os.environ["ARCHOMATA_DATABASE_URL"], min_size=2,
                                          max_size=10, init=_init)
    await app[POOL].execute("select 1")
    app[REDIS] = Redis.from_url(os.environ["ARCHOMATA_REDIS_URL"])
    yield
    await app[REDIS].aclose()
    await app[POOL].close()


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")


def main() -> None:
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app[KEYS] = {kid: secret for kid, _, secret in
                 (e.partition(":") for e in os.environ["ARCHOMATA_JWT_SECRETS"].split(","))}
    app.cleanup_ctx.append(resources)
    app.router.add_get("/health/live", lambda r: web.json_response({"status": "ok"}))
    app.router.add_get("/api/v1/org/members", members)
    app.router.add_get("/api/v1/accounts", accounts)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["ARCHOMATA_PORT"]), print=None,
                access_log=None)


if __name__ == "__main__":
    main()
