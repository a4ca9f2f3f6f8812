"""The personal door: `person(request).tx()` (db.user_tx_of) is scoped from the verified
token alone, and refuses a request without a person behind it whatever guard the route
declares."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from archomata.access import caller
from archomata.access.guards import agent_only, authenticated, public
from archomata.config import Config
from tests.conftest import app_with_routes
from tests.factories import agent_auth, agent_with_key, signed_up

routes = web.RouteTableDef()

SCOPE = """select current_setting('app.user_id') as user_id,
                  current_setting('app.org_id') as org_id,
                  current_setting('app.platform') as platform"""


async def _scope(request: web.Request) -> web.Response:
    async with caller.person(request).tx() as tx:
        row = await tx.fetchrow(SCOPE)
    assert row is not None
    return web.json_response(dict(row))


@routes.get("/api/v1/test/user-tx")
@authenticated
async def as_a_person(request: web.Request) -> web.Response:
    return await _scope(request)


@routes.get("/api/v1/test/user-tx-public")
@public
async def as_anyone(request: web.Request) -> web.Response:
    return await _scope(request)


@routes.get("/api/v1/bridge/test-user-tx")
@agent_only
async def as_an_agent(request: web.Request) -> web.Response:
    return await _scope(request)


async def test_the_scope_is_the_tokens_user_and_org(aiohttp_client: Any, config: Config,
                                                    mail_sink: Any) -> None:
    client = await aiohttp_client(app_with_routes(config, routes))
    me = await signed_up(client, mail_sink)
    response = await client.get("/api/v1/test/user-tx", headers=me.auth)
    assert response.status == 200, await response.text()
    assert await response.json() == {"user_id": str(me.user_id), "org_id": str(me.org_id),
                                     "platform": ""}


async def test_no_token_and_an_agents_key_are_refused_by_the_door_itself(
        aiohttp_client: Any, config: Config, mail_sink: Any) -> None:
    client = await aiohttp_client(app_with_routes(config, routes))
    me = await signed_up(client, mail_sink)
    _, api_key = await agent_with_key(client, me)
    assert (await client.get("/api/v1/test/user-tx-public")).status == 401
    agent = await client.get("/api/v1/bridge/test-user-tx", headers=agent_auth(api_key))
    assert agent.status == 403, await agent.text()
