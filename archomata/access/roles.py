"""System roles and who holds them, directly or through groups.

Every function that changes who holds a role tells the transaction
(`tx.permissions_changed`), which bumps the permission cache once it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from archomata.db import Tx


@dataclass(frozen=True)
class Role:
    id: UUID
    name: str
    description: str
    permissions: tuple[str, ...]


LIST = """
    select r.id, r.name, r.description,
           array(select rp.permission from role_permissions rp where rp.role_id = r.id
                 order by rp.permission) as permissions
    from roles r order by r.name
"""


async def list_all(tx: Tx) -> list[Role]:
    return [Role(r["id"], r["name"], r["description"], tuple(r["permissions"]))
            for r in await tx.fetch(LIST)]


LIST_PERMISSIONS = "select name from permissions order by name"


async def catalogue(tx: Tx) -> list[str]:
    return [r["name"] for r in await tx.fetch(LIST_PERMISSIONS)]


EXISTING = "select id from roles where id = any($1::uuid[])"


async def unknown_ids(tx: Tx, role_ids: list[UUID]) -> list[UUID]:
    found = {r["id"] for r in await tx.fetch(EXISTING, role_ids)}
    return [r for r in role_ids if r not in found]


ASSIGN_BY_NAME = """
    insert into member_roles (org_id, user_id, role_id)
    select $1, $2, id from roles where name = $3
    on conflict do nothing
"""


async def assign_by_name(tx: Tx, org_id: UUID, user_id: UUID, name: str) -> None:
    await tx.execute(ASSIGN_BY_NAME, org_id, user_id, name)
    tx.permissions_changed(org_id)


CLEAR_MEMBER = "delete from member_roles where org_id = $1 and user_id = $2"
SET_MEMBER = """
    insert into member_roles (org_id, user_id, role_id)
    select $1, $2, unnest($3::uuid[])
    on conflict do nothing
"""


async def set_for_member(tx: Tx, org_id: UUID, user_id: UUID, role_ids: list[UUID]) -> None:
    """Replaces the member's direct roles with `role_ids` (checked to exist)."""
    await tx.execute(CLEAR_MEMBER, org_id, user_id)
    await tx.execute(SET_MEMBER, org_id, user_id, role_ids)
    tx.permissions_changed(org_id)


MEMBER_ROLES = """
    select r.id, r.name from member_roles mr join roles r on r.id = mr.role_id
    where mr.org_id = $1 and mr.user_id = $2 order by r.name
"""


async def of_member(tx: Tx, org_id: UUID, user_id: UUID) -> list[dict[str, object]]:
    return [{"id": r["id"], "name": r["name"]}
            for r in await tx.fetch(MEMBER_ROLES, org_id, user_id)]
