"""The one reader of a request's caller (archomata/access/caller.py): each narrowing gives
its kind typed, from the verified Principal alone, and refuses any other kind as that
kind's guard does. No server: the request is aiohttp's own test request, with the
Principal authn would have left on it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from archomata import keys
from archomata.access import caller
from archomata.access.principal import ActorType, OrgRole, Principal
from archomata.errors import ApiError

USER, ORG, SESSION, AGENT = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
IN_ORG = Principal(ActorType.USER, USER, ORG, SESSION, org_role=OrgRole.ADMINISTRATOR)
NO_ORG = Principal(ActorType.USER, USER, None, SESSION)
AN_AGENT = Principal(ActorType.AGENT, AGENT, ORG)


def request_of(principal: Principal | None, *, authenticated: bool = True) -> web.Request:
    app = web.Application()
    app[keys.DB_POOL] = None  # the doors are built, never opened
    app[keys.DB_TURNS] = asyncio.Semaphore(1)
    request = make_mocked_request("GET", "/api/v1/x", app=app)
    if authenticated:  # authn ran: the key is set, to None for an anonymous request
        request[keys.PRINCIPAL] = principal
    return request


def refusal(read: object, principal: Principal | None) -> tuple[int, str]:
    assert callable(read)
    with pytest.raises(ApiError) as refused:
        read(request_of(principal))
    return refused.value.status, refused.value.code


class TestCaller:
    def test_anyone_verified(self) -> None:
        assert caller.caller(request_of(AN_AGENT)) is AN_AGENT
        assert refusal(caller.caller, None) == (401, "not_authenticated")

    def test_if_any_on_a_public_route(self) -> None:
        assert caller.caller_if_any(request_of(None)) is None
        assert caller.caller_if_any(request_of(None, authenticated=False)) is None
        assert caller.caller_if_any(request_of(IN_ORG)) is IN_ORG


class TestPerson:
    def test_a_person_with_or_without_an_org(self) -> None:
        me = caller.person(request_of(IN_ORG))
        assert (me.user_id, me.org_id, me.session_id, me.principal) == (
            USER, ORG, SESSION, IN_ORG)
        assert caller.person(request_of(NO_ORG)).org_id is None

    def test_an_agent_or_no_one_is_refused(self) -> None:
        assert refusal(caller.person, AN_AGENT) == (403, "permission_denied")
        assert refusal(caller.person, None) == (401, "not_authenticated")


class TestMember:
    def test_a_person_in_their_tokens_org(self) -> None:
        acting = caller.member(request_of(IN_ORG))
        assert (acting.user_id, acting.org_id, acting.principal) == (USER, ORG, IN_ORG)

    def test_no_org_an_agent_or_no_one_is_refused(self) -> None:
        assert refusal(caller.member, NO_ORG) == (403, "no_org")
        assert refusal(caller.member, AN_AGENT) == (403, "permission_denied")
        assert refusal(caller.member, None) == (401, "not_authenticated")


class TestAgent:
    def test_an_agent_by_its_key(self) -> None:
        keyed = caller.agent(request_of(AN_AGENT))
        assert (keyed.agent_id, keyed.org_id) == (AGENT, ORG)

    def test_a_person_or_no_one_is_refused(self) -> None:
        assert refusal(caller.agent, IN_ORG) == (401, "invalid_api_key")
        assert refusal(caller.agent, None) == (401, "invalid_api_key")
