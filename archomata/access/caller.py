"""The one way to read a request's caller: the Principal its verified credential names
(authn leaves it on the request), narrowed to the kind of caller a route serves.

    caller(request)          Principal     anyone verified               else 401
    caller_if_any(request)   Principal | None   a public route's, if any
    person(request)          Person        a person, in an org or not    else 403 (an agent)
    member(request)          Member        a person in their token's org else 403 `no_org`
    agent(request)           Agent         an agent, by its X-API-Key    else 401 `invalid_api_key`

The guards (archomata.access.guards) refuse with these same calls, so behind its guard a
handler's call cannot fail, and what it gets is typed for its kind: a Member's `org_id`
is never None. A Person and an Agent carry the doors of their scope (archomata.db), the
ids in them taken from the verified credential alone, for the flows that take them
without a request (archomata.identity.service, archomata.bridge.service).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from uuid import UUID

from aiohttp import web

from archomata import keys
from archomata.access.principal import ActorType, Principal
from archomata.db import Tx, TxOpener, member_tx_of, org_tx, user_tx_of
from archomata.errors import Forbidden, Unauthorized


@dataclass(frozen=True, slots=True)
class Person:
    """A signed-in person, as their verified token names them, with the doors of their
    scope: `tx` (their own rows, and their token's org), `into` (one of their other orgs,
    the membership checked by the door itself). `principal` holds the rest the token
    says (platform role, org role, permissions, second factor)."""

    user_id: UUID
    org_id: UUID | None
    session_id: UUID | None
    principal: Principal
    tx: TxOpener
    into: Callable[[UUID], AbstractAsyncContextManager[Tx]]


@dataclass(frozen=True, slots=True)
class Member:
    """A person acting in their token's org: the caller of the org's routes (whose door
    is `org_tx(request)`). `principal` holds their role and permissions, for the checks
    made again inside a transaction."""

    user_id: UUID
    org_id: UUID
    principal: Principal


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent as its verified key names it, with the door of its org."""

    org_id: UUID
    agent_id: UUID
    tx: TxOpener


def caller_if_any(request: web.Request) -> Principal | None:
    """The verified caller of a route that also serves anyone (public routes)."""
    return request.get(keys.PRINCIPAL)


def caller(request: web.Request) -> Principal:
    principal = caller_if_any(request)
    if principal is None:
        raise Unauthorized("Authentication is required.")
    return principal


def _person_principal(request: web.Request) -> Principal:
    principal = caller(request)
    if principal.actor_type is not ActorType.USER:
        raise Forbidden("This route is for people, not agents.")
    return principal


def person(request: web.Request) -> Person:
    principal = _person_principal(request)
    pool, turns = request.app[keys.DB_POOL], request.app[keys.DB_TURNS]
    return Person(principal.actor_id, principal.org_id, principal.session_id, principal,
                  functools.partial(user_tx_of, pool, principal.actor_id, principal.org_id,
                                    turns=turns),
                  functools.partial(member_tx_of, pool, principal.actor_id, turns=turns))


def member(request: web.Request) -> Member:
    principal = _person_principal(request)
    if principal.org_id is None:
        raise Forbidden("This action needs an organisation.", code="no_org")
    return Member(principal.actor_id, principal.org_id, principal)


def agent(request: web.Request) -> Agent:
    principal = caller_if_any(request)
    if principal is None or principal.actor_type is not ActorType.AGENT \
            or principal.org_id is None:
        raise Unauthorized("A valid X-API-Key is required.", code="invalid_api_key")
    return Agent(principal.org_id, principal.actor_id, functools.partial(org_tx, request))
