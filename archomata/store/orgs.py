"""Organisations (the tenants) and who belongs to them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from archomata.db import Tx
from archomata.security.principal import OrgRole


@dataclass(frozen=True, slots=True)
class Org:
    id: UUID
    name: str
    disabled: bool
    created_at: datetime


COLUMNS = "id, name, disabled_at is not null as disabled, created_at"


def _org(row: asyncpg.Record | None) -> Org | None:
    return None if row is None else Org(row["id"], row["name"], row["disabled"],
                                        row["created_at"])


INSERT = f"insert into orgs (name) values ($1) returning {COLUMNS}"


async def insert(tx: Tx, name: str) -> Org:
    org = _org(await tx.fetchrow(INSERT, name))
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
    await tx.execute(ADD_MEMBER, org_id, user_id, role.value)
