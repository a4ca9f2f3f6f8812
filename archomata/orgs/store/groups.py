"""Groups of an org: their members and the roles they grant.

Every function that changes who holds which role through a group tells the transaction
(`tx.permissions_changed`), which bumps the permission cache once it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from archomata import rows
from archomata.db import Tx
from archomata.web.pagination import Position


@dataclass(frozen=True)
class Group:
    id: UUID
    name: str
    description: str
    members: tuple[dict[str, Any], ...]
    roles: tuple[dict[str, Any], ...]
    created_at: datetime
    updated_at: datetime


_SELECT = """
    select g.id, g.name, g.description, g.created_at, g.updated_at,
           coalesce((select json_agg(json_build_object('id', u.id, 'name', u.name)
                                     order by u.name, u.id)
                     from group_members gm join users u on u.id = gm.user_id
                     where gm.org_id = g.org_id and gm.group_id = g.id), '[]') as members,
           coalesce((select json_agg(json_build_object('id', r.id, 'name', r.name)
                                     order by r.name)
                     from group_roles gr join roles r on r.id = gr.role_id
                     where gr.org_id = g.org_id and gr.group_id = g.id), '[]') as roles
    from groups g
"""


def _group(row: Any) -> Group:
    return rows.build(Group, (row["id"], row["name"], row["description"],
                              tuple(row["members"]), tuple(row["roles"]), row["created_at"],
                              row["updated_at"]))


LIST_PAGE = _SELECT + """
    where g.org_id = $1 and ($2::timestamptz is null or (g.created_at, g.id) > ($2, $3))
    order by g.created_at, g.id
    limit $4
"""


async def list_page(tx: Tx, org_id: UUID, after: Position | None, limit: int) -> list[Group]:
    found = await tx.fetch(LIST_PAGE, org_id, after.at if after else None,
                           after.id if after else None, limit)
    return [_group(r) for r in found]


GET = _SELECT + " where g.org_id = $1 and g.id = $2"


async def get(tx: Tx, org_id: UUID, group_id: UUID) -> Group | None:
    row = await tx.fetchrow(GET, org_id, group_id)
    return _group(row) if row else None


INSERT = """
    insert into groups (org_id, name, description) values ($1, $2, $3)
    on conflict (org_id, name) do nothing
    returning id
"""


async def insert(tx: Tx, org_id: UUID, name: str, description: str) -> UUID | None:
    """The new group's id, or None when the org already has a group of that name."""
    group_id: UUID | None = await tx.fetchval(INSERT, org_id, name, description)
    return group_id


UPDATE = """
    update groups set name = coalesce($3, name), description = coalesce($4, description),
                      updated_at = now()
    where org_id = $1 and id = $2
    returning id
"""


async def update(tx: Tx, org_id: UUID, group_id: UUID, name: str | None,
                 description: str | None) -> bool:
    return await tx.fetchval(UPDATE, org_id, group_id, name, description) is not None


DELETE = "delete from groups where org_id = $1 and id = $2 returning id"


async def delete(tx: Tx, org_id: UUID, group_id: UUID) -> bool:
    """Its members and roles go with it (on delete cascade)."""
    tx.permissions_changed(org_id)
    return await tx.fetchval(DELETE, org_id, group_id) is not None


CLEAR_MEMBERS = "delete from group_members where org_id = $1 and group_id = $2"
ADD_MEMBERS = """
    insert into group_members (org_id, group_id, user_id)
    select $1, $2, unnest($3::uuid[]) on conflict do nothing
"""


async def set_members(tx: Tx, org_id: UUID, group_id: UUID, user_ids: list[UUID]) -> None:
    await tx.execute(CLEAR_MEMBERS, org_id, group_id)
    await tx.execute(ADD_MEMBERS, org_id, group_id, user_ids)
    tx.permissions_changed(org_id)


CLEAR_ROLES = "delete from group_roles where org_id = $1 and group_id = $2"
ADD_ROLES = """
    insert into group_roles (org_id, group_id, role_id)
    select $1, $2, unnest($3::uuid[]) on conflict do nothing
"""


async def set_roles(tx: Tx, org_id: UUID, group_id: UUID, role_ids: list[UUID]) -> None:
    await tx.execute(CLEAR_ROLES, org_id, group_id)
    await tx.execute(ADD_ROLES, org_id, group_id, role_ids)
    tx.permissions_changed(org_id)


EXISTING = "select id from groups where org_id = $1 and id = any($2::uuid[])"


async def unknown_ids(tx: Tx, org_id: UUID, group_ids: list[UUID]) -> list[UUID]:
    found = {r["id"] for r in await tx.fetch(EXISTING, org_id, group_ids)}
    return [g for g in group_ids if g not in found]


ADD_USER_TO = """
    insert into group_members (org_id, group_id, user_id)
    select $1, g.id, $2 from groups g where g.org_id = $1 and g.id = any($3::uuid[])
    on conflict do nothing
"""


async def add_user_to(tx: Tx, org_id: UUID, user_id: UUID, group_ids: list[UUID]) -> None:
    """Puts a member into those of `group_ids` that still exist."""
    await tx.execute(ADD_USER_TO, org_id, user_id, group_ids)
    tx.permissions_changed(org_id)
