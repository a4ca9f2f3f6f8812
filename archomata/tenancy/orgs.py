"""Organisations (the tenants) and who belongs to them: the org rows and a person's
memberships, which signing in reads (archomata.identity) and the org's administration
changes (archomata.orgs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from archomata.db import Tx
from archomata.tenancy.org_role import OrgRole


@dataclass(frozen=True)
class Org:
    id: UUID
    name: str
    disabled: bool
    created_at: datetime
    require_mfa: bool = False  # its members must have a second factor


COLUMNS = "id, name, disabled_at is not null as disabled, created_at, require_mfa"


def _org(row: asyncpg.Record | None) -> Org | None:
    return None if row is None else Org(row["id"], row["name"], row["disabled"],
                                        row["created_at"], row["require_mfa"])


INSERT = f"insert into orgs (id, name) values ($1, $2) returning {COLUMNS}"


async def insert(tx: Tx, name: str) -> Org:
    """The org a sign-up transaction (archomata.db.signup_tx) was opened for."""
    assert tx.org_id is not None and not tx.platform, "a new org is made in its signup_tx"
    org = _org(await tx.fetchrow(INSERT, tx.org_id, name))
    assert org is not None
    return org


GET = f"select {COLUMNS} from orgs where id = $1"


async def get(tx: Tx, org_id: UUID) -> Org | None:
    return _org(await tx.fetchrow(GET, org_id))


ADD_MEMBER = """
    insert into memberships (org_id, user_id, org_role) values ($1, $2, $3)
    on conflict (org_id, user_id) do nothing
"""


async def add_member(tx: Tx, org_id: UUID, user_id: UUID, role: OrgRole) -> None:
    """A new member (a cached "not a member" answer for them then goes stale: the
    transaction bumps the permission cache once it commits)."""
    await tx.execute(ADD_MEMBER, org_id, user_id, role.value)
    tx.permissions_changed(org_id)


@dataclass(frozen=True)
class Membership:
    org: Org
    org_role: OrgRole


LIST_FOR_USER = """
    select o.id, o.name, o.disabled_at is not null as disabled, o.created_at, o.require_mfa,
           m.org_role
    from memberships m join orgs o on o.id = m.org_id
    where m.user_id = $1
    order by m.created_at, o.id
"""


async def memberships_of(tx: Tx, user_id: UUID) -> list[Membership]:
    """Every org the user belongs to (needs a transaction scoped to that user)."""
    rows = await tx.fetch(LIST_FOR_USER, user_id)
    return [Membership(Org(r["id"], r["name"], r["disabled"], r["created_at"],
                           r["require_mfa"]), OrgRole(r["org_role"])) for r in rows]


LIST_PAGE = f"""
    select {COLUMNS} from orgs
    where ($1::timestamptz is null or (created_at, id) < ($1, $2))
    order by created_at desc, id desc
    limit $3
"""


async def list_page(tx: Tx, after: tuple[datetime, UUID] | None, limit: int) -> list[Org]:
    at, last_id = after if after else (None, None)
    rows = await tx.fetch(LIST_PAGE, at, last_id, limit)
    return [Org(r["id"], r["name"], r["disabled"], r["created_at"]) for r in rows]


# The runtime role cannot write disabled_at: the owner's function does, once the
# change's audit entry is in this transaction (sql/020).
SET_DISABLED = f"select {COLUMNS} from admin_set_org_disabled($1, $2)"


async def set_disabled(tx: Tx, org_id: UUID, disabled: bool) -> Org | None:
    """Record the `org.disabled` / `org.enabled` entry in `tx` first: without it the
    database refuses."""
    return _org(await tx.fetchrow(SET_DISABLED, org_id, disabled))


# `before` reads the row as it stood, locked (joined in, so that it is read before the
# update): whether require_mfa moved is known in the same round trip.
UPDATE = f"""
    with before as (select require_mfa as was from orgs where id = $1 for update)
    update orgs set name = coalesce($2, name), require_mfa = coalesce($3, require_mfa),
                    updated_at = now()
    from before
    where id = $1
    returning {COLUMNS}, require_mfa is distinct from before.was as mfa_moved
"""


async def update(tx: Tx, org_id: UUID, name: str | None,
                 require_mfa: bool | None) -> Org | None:
    """Changes what is given (None: left as it is). A change of require_mfa changes what
    every member may do (the permission cache holds it beside their permissions): the
    transaction bumps the cache once it commits."""
    row = await tx.fetchrow(UPDATE, org_id, name, require_mfa)
    if row is not None and row["mfa_moved"]:
        tx.permissions_changed(org_id)
    return _org(row)
