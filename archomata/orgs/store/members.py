"""An org's members: who they are, their org role, their roles and groups.

Every function that changes what a member may do tells the transaction
(`tx.permissions_changed`), which bumps the permission cache once it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from archomata import rows
from archomata.db import Tx
from archomata.identity.store.users import normalize_email
from archomata.tenancy.org_role import OrgRole
from archomata.web.pagination import Position


@dataclass(frozen=True)
class Member:
    user_id: UUID
    email: str
    name: str
    org_role: OrgRole
    roles: tuple[dict[str, Any], ...]
    groups: tuple[dict[str, Any], ...]
    joined_at: datetime


_SELECT = """
    select m.user_id, u.email, u.name, m.org_role, m.created_at as joined_at,
           coalesce((select json_agg(json_build_object('id', r.id, 'name', r.name)
                                     order by r.name)
                     from member_roles mr join roles r on r.id = mr.role_id
                     where mr.org_id = m.org_id and mr.user_id = m.user_id), '[]') as roles,
           coalesce((select json_agg(json_build_object('id', g.id, 'name', g.name)
                                     order by g.name)
                     from group_members gm join groups g
                          on g.org_id = gm.org_id and g.id = gm.group_id
                     where gm.org_id = m.org_id and gm.user_id = m.user_id), '[]') as groups
    from memberships m join users u on u.id = m.user_id
"""

LIST_PAGE = _SELECT + """
    where m.org_id = $1 and ($2::timestamptz is null or (m.created_at, m.user_id) > ($2, $3))
    order by m.created_at, m.user_id
    limit $4
"""

GET = _SELECT + " where m.org_id = $1 and m.user_id = $2"


# By value, without OrgRole(...)'s enum machinery: a microsecond a row, 50 rows a page.
_ORG_ROLES = {role.value: role for role in OrgRole}


def _member(row: Any) -> Member:
    return rows.build(Member, (row["user_id"], row["email"], row["name"],
                               _ORG_ROLES[row["org_role"]], tuple(row["roles"]),
                               tuple(row["groups"]), row["joined_at"]))


async def list_page(tx: Tx, org_id: UUID, after: Position | None, limit: int) -> list[Member]:
    """Members in the order they joined (oldest first), `limit` of them after `after`."""
    found = await tx.fetch(LIST_PAGE, org_id, after.at if after else None,
                           after.id if after else None, limit)
    return [_member(r) for r in found]


async def get(tx: Tx, org_id: UUID, user_id: UUID) -> Member | None:
    row = await tx.fetchrow(GET, org_id, user_id)
    return _member(row) if row else None


LOCK_ADMINS = """
    select user_id from memberships
    where org_id = $1 and org_role = 'administrator'
    order by user_id
    for update
"""


async def lock_administrators(tx: Tx, org_id: UUID) -> list[UUID]:
    """The org's administrators, locked so that two demotions cannot both pass the
    last-administrator check."""
    return [r["user_id"] for r in await tx.fetch(LOCK_ADMINS, org_id)]


LOCK_ADMIN = """
    select 1 from memberships m join users u on u.id = m.user_id
    where m.org_id = $1 and m.user_id = $2 and m.org_role = 'administrator'
      and u.disabled_at is null
    for share
"""


async def lock_administrator(tx: Tx, org_id: UUID, user_id: UUID) -> bool:
    """Whether the user is an administrator of the org with an enabled account, holding
    both rows until the transaction ends: a demotion, removal or disabling of them waits
    for it, and then sees what it wrote."""
    return await tx.fetchval(LOCK_ADMIN, org_id, user_id) is not None


SET_ROLE = """
    update memberships set org_role = $3 where org_id = $1 and user_id = $2
"""


async def set_org_role(tx: Tx, org_id: UUID, user_id: UUID, role: OrgRole) -> None:
    await tx.execute(SET_ROLE, org_id, user_id, role.value)
    tx.permissions_changed(org_id)


REMOVE = """
    delete from memberships where org_id = $1 and user_id = $2
"""


async def remove(tx: Tx, org_id: UUID, user_id: UUID) -> None:
    """Ends a membership; its roles and group places go with it (on delete cascade)."""
    await tx.execute(REMOVE, org_id, user_id)
    tx.permissions_changed(org_id)


NON_MEMBERS = """
    select u from unnest($2::uuid[]) u
    where not exists (select 1 from memberships m where m.org_id = $1 and m.user_id = u)
"""


async def non_members(tx: Tx, org_id: UUID, user_ids: list[UUID]) -> list[UUID]:
    return [r[0] for r in await tx.fetch(NON_MEMBERS, org_id, user_ids)]


HAS_MEMBER_WITH_EMAIL = """
    select 1 from memberships m join users u on u.id = m.user_id
    where m.org_id = $1 and u.email_normalized = $2
"""


async def has_member_with_email(tx: Tx, org_id: UUID, email: str) -> bool:
    return await tx.fetchval(HAS_MEMBER_WITH_EMAIL, org_id, normalize_email(email)) is not None
