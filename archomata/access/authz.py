"""Loading what a member may do in an org from PostgreSQL (the cache's source)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from archomata.db import service_tx
from archomata.identity.revocation import Authz

# Effective permissions: the union over roles held directly and through every group.
LOAD_MEMBERSHIP = """
    select m.org_role,
           array(select distinct rp.permission
                 from role_permissions rp
                 where rp.role_id in (
                     select mr.role_id from member_roles mr
                     where mr.org_id = $1 and mr.user_id = $2
                     union
                     select gr.role_id from group_roles gr
                     join group_members gm on gm.org_id = gr.org_id and gm.group_id = gr.group_id
                     where gm.org_id = $1 and gm.user_id = $2)) as permissions
    from memberships m
    where m.org_id = $1 and m.user_id = $2
"""


async def load(pool: asyncpg.Pool, org_id: UUID, user_id: UUID) -> Authz | None:
    """The user's role and permissions in the org, or None when not a member."""
    async with service_tx(pool, org_id=org_id, user_id=user_id) as tx:
        row = await tx.fetchrow(LOAD_MEMBERSHIP, org_id, user_id)
    if row is None:
        return None
    return Authz(row["org_role"], frozenset(row["permissions"]))
