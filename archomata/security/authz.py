"""Loading what a member may do in an org from PostgreSQL (the cache's source)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from archomata.db import service_tx
from archomata.security.revocation import Authz

LOAD_MEMBERSHIP = """
    select m.org_role
    from memberships m
    where m.org_id = $1 and m.user_id = $2
"""


async def load(pool: asyncpg.Pool, org_id: UUID, user_id: UUID) -> Authz | None:
    """The user's role and permissions in the org, or None when not a member."""
    async with service_tx(pool, org_id=org_id, user_id=user_id) as tx:
        row = await tx.fetchrow(LOAD_MEMBERSHIP, org_id, user_id)
    if row is None:
        return None
    return Authz(row["org_role"], frozenset())
