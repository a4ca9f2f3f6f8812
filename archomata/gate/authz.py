"""What a member may do in an org (`Authz`, the permission cache's entry), loaded from
PostgreSQL (the cache's source)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from archomata.db import service_tx


@dataclass(frozen=True, slots=True)
class Authz:
    """What a user may do in an org: their org role and effective permissions."""

    org_role: str
    permissions: frozenset[str]
    org_requires_mfa: bool = False  # the org asks its members for a second factor


# Effective permissions: the union over roles held directly and through every group;
# with the org's permission version read in the same snapshot, which tags the cache entry
# (a change committed after this read raises the version past it).
LOAD_MEMBERSHIP = """
    select coalesce((select version from permission_versions where org_id = $1), 0)
               as version,
           m.org_role,
           (select require_mfa from orgs where id = $1) as require_mfa,
           array(select distinct rp.permission
                 from role_permissions rp
                 where rp.role_id in (
                     select mr.role_id from member_roles mr
                     where mr.org_id = $1 and mr.user_id = $2
                     union
                     select gr.role_id from group_roles gr
                     join group_members gm on gm.org_id = gr.org_id and gm.group_id = gr.group_id
                     where gm.org_id = $1 and gm.user_id = $2)) as permissions
    from (values (1)) as one
    left join memberships m on m.org_id = $1 and m.user_id = $2
"""


async def load(pool: asyncpg.Pool, org_id: UUID, user_id: UUID) -> tuple[Authz | None, int]:
    """The user's role and permissions in the org (None when not a member), and the org's
    permission version they were read at."""
    async with service_tx(pool, org_id=org_id, user_id=user_id) as tx:
        row = await tx.fetchrow(LOAD_MEMBERSHIP, org_id, user_id)
    assert row is not None  # one row always: the left join keeps it
    if row["org_role"] is None:
        return None, row["version"]
    return (Authz(row["org_role"], frozenset(row["permissions"]), bool(row["require_mfa"])),
            row["version"])
