"""Rules on an org's members, invitations and groups shared by their routes."""

from __future__ import annotations

from uuid import UUID

from archomata.access import store as roles
from archomata.db import Tx
from archomata.errors import ValidationFailed
from archomata.orgs.store import groups


async def check_refs(tx: Tx, org_id: UUID, role_ids: list[UUID],
                     group_ids: list[UUID] | None = None) -> None:
    """422 naming every role id, and every group id of the org, that does not exist."""
    errors: dict[str, list[str]] = {}
    missing_roles = await roles.unknown_ids(tx, role_ids)
    if missing_roles:
        errors["role_ids"] = [f"Unknown role {r}." for r in missing_roles]
    missing_groups = await groups.unknown_ids(tx, org_id, group_ids or [])
    if missing_groups:
        errors["group_ids"] = [f"Unknown group {g}." for g in missing_groups]
    if errors:
        raise ValidationFailed("Some referenced roles or groups do not exist.", errors=errors)
