"""Every 201 answer carries `Location`, the path of what it created (RFC 9110 §15.3.2),
and the OpenAPI document says so: each created resource is then reached at that path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.config import Config
from archomata.web.json_io import json_response
from tests.factories import (
    Session,
    agent_auth,
    agent_with_key,
    signed_up,
    strong_password,
    trading_account,
    unique_email,
)

Make = Callable[[Any, Session], Awaitable[tuple[Any, str]]]
MARKET = {"symbol": "EURUSD", "side": "buy", "type": "market", "volume": "0.10"}
POSITION = {"ticket": 31, "symbol": "EURUSD", "side": "buy", "volume": "0.10",
            "open_price": "1.08500", "current_price": "1.08625", "sl": None, "tp": None,
            "profit": "12.50", "opened_at": "2026-11-28T09:30:00Z"}


async def register(client: Any, _: Session) -> tuple[Any, str]:
    response = await client.post("/api/v1/auth/register", json={
        "email": unique_email(), "password": strong_password(), "name": "New Person",
        "org_name": "New Org"})
    return response, "/api/v1/me"  # the account, once signed in; the same for any address


async def invitation(client: Any, admin: Session) -> tuple[Any, str]:
    response = await client.post("/api/v1/org/invitations", headers=admin.auth, json={
        "email": unique_email(), "org_role": "member", "role_ids": [], "group_ids": []})
    return response, f"/api/v1/org/invitations/{(await response.json())['id']}"


async def group(client: Any, admin: Session) -> tuple[Any, str]:
    response = await client.post("/api/v1/groups", headers=admin.auth, json={"name": "Desk"})
    return response, f"/api/v1/groups/{(await response.json())['id']}"


async def account(client: Any, admin: Session) -> tuple[Any, str]:
    response = await client.post("/api/v1/accounts", headers=admin.auth, json={
        "name": "Main", "broker": "Broker Ltd", "server": "Broker-Demo", "login": 4242,
        "environment": "demo"})
    return response, f"/api/v1/accounts/{(await response.json())['id']}"


async def strategy(client: Any, admin: Session) -> tuple[Any, str]:
    response = await client.post("/api/v1/strategies", headers=admin.auth,
                                 json={"name": "Breakout"})
    return response, f"/api/v1/strategies/{(await response.json())['id']}"


async def agent(client: Any, admin: Session) -> tuple[Any, str]:
    response = await client.post("/api/v1/agents", headers=admin.auth, json={"name": "T1"})
    return response, f"/api/v1/agents/{(await response.json())['agent']['id']}"


async def order(client: Any, admin: Session) -> tuple[Any, str]:
    made, _ = await agent_with_key(client, admin)
    desk = await trading_account(client, admin, agent_id=made["id"])
    response = await client.post(f"/api/v1/accounts/{desk['id']}/orders", json=MARKET,
                                 headers=admin.auth)
    return response, f"/api/v1/orders/{(await response.json())['id']}"


async def close(client: Any, admin: Session) -> tuple[Any, str]:
    made, key = await agent_with_key(client, admin)
    desk = await trading_account(client, admin, agent_id=made["id"])
    pushed = await client.put(f"/api/v1/bridge/accounts/{desk['login']}/state", json={
        "balance": "10000.00", "equity": "10012.50", "margin": "108.50",
        "free_margin": "9904.00", "currency": "USD", "positions": [POSITION]},
        headers=agent_auth(key))
    assert pushed.status == 204, await pushed.text()
    response = await client.post(
        f"/api/v1/accounts/{desk['id']}/positions/{POSITION['ticket']}/close",
        headers=admin.auth)
    return response, f"/api/v1/orders/{(await response.json())['id']}"


# Every route that answers 201, with how to make one and where it says it is.
CREATED: dict[tuple[str, str], Make] = {
    ("POST", "/api/v1/auth/register"): register,
    ("POST", "/api/v1/org/invitations"): invitation,
    ("POST", "/api/v1/groups"): group,
    ("POST", "/api/v1/accounts"): account,
    ("POST", "/api/v1/strategies"): strategy,
    ("POST", "/api/v1/agents"): agent,
    ("POST", "/api/v1/accounts/{account_id}/orders"): order,
    ("POST", "/api/v1/accounts/{account_id}/positions/{ticket}/close"): close,
}


@pytest.mark.parametrize("route", sorted(CREATED), ids=lambda route: route[1])
async def test_a_201_names_what_it_created_in_location(
        client: Any, mail_sink: Any, route: tuple[str, str]) -> None:
    admin = await signed_up(client, mail_sink)
    response, expected = await CREATED[route](client, admin)
    assert response.status == 201, await response.text()
    assert response.headers["Location"] == expected
    if expected == "/api/v1/me":
        return
    if route[1] == "/api/v1/org/invitations":  # no GET of one: its DELETE is there
        assert (await client.delete(expected, headers=admin.auth)).status == 204
        return
    reached = await client.get(expected, headers=admin.auth)
    assert reached.status == 200, await reached.text()
    created = await response.json()
    assert (await reached.json())["id"] == created.get("agent", created)["id"]


def test_every_route_that_answers_201_is_tested_and_documents_location(
        config: Config) -> None:
    """The router's routes, through the OpenAPI document built from it: a new 201 route
    is missed by no one."""
    spec = create_app(config)[keys.OPENAPI]
    created = {(method.upper(), path): operation["responses"]["201"]
               for path, operations in spec["paths"].items()
               for method, operation in operations.items() if "201" in operation["responses"]}
    assert set(created) == set(CREATED)
    for answer in created.values():
        assert answer["headers"]["Location"]["required"] is True


def test_a_201_without_location_is_refused_where_answers_are_made() -> None:
    with pytest.raises(ValueError, match="location"):
        json_response({"id": "x"}, status=201)
    made = json_response({"id": "x"}, status=201, location="/api/v1/groups/x",
                         headers={"X-Other": "kept"})
    assert made.headers["Location"] == "/api/v1/groups/x"
    assert made.headers["X-Other"] == "kept"
