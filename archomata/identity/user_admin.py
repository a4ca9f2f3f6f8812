"""The platform administrator's changes to a user, with no HTTP (PATCH /admin/users/{id},
identity/routes/admin_users.py): the platform role and the disabled mark.

    update_user
        -> the user as it stands (404 if none)
        -> the `user.updated` entry first: the database changes these columns only once
           it is written (sql/020)
        -> disabled now: what the account loses outside identity (its open invitations,
           handed in as `on_disabled`: archomata.orgs), its mark in Redis before the
           commit and its sessions ended, in the transaction
        -> a new platform role: the tokens minted so far die (their claims carry it)
        -> enabled: Redis's mark lifted only after the commit, so a change that fails is
           never more lenient than the database
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from archomata import audit
from archomata.access.principal import PlatformRole
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, TxOpener
from archomata.errors import NotFound
from archomata.identity.revocation import Revocation
from archomata.identity.sessions import SessionStore
from archomata.identity.store import users
from archomata.identity.store.users import User

# What disabling an account ends outside identity, in its transaction:
# (tx, who, the user's id, the administrator's id).
OnDisabled = Callable[[Tx, AuditContext, UUID, UUID], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class UserChange:
    """What the administrator asks for (None: left as it is)."""

    platform_role: PlatformRole | None = None
    disabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Keepers:
    """What holds a user's standing outside the users table: the Redis marks, the
    sessions, and what an account disabled loses elsewhere."""

    revocation: Revocation
    sessions: SessionStore
    on_disabled: OnDisabled


async def update_user(open_tx: TxOpener, who: AuditContext, keepers: Keepers,
                      admin_id: UUID, user_id: UUID, change: UserChange) -> User:
    """Applies the change, audited with what moved (`changes`: from, to), and returns the
    user as it stands after it."""
    async with open_tx() as tx:
        before = await users.get(tx, user_id)
        if before is None:
            raise NotFound("No such user.")
        wanted = {"platform_role": change.platform_role or before.platform_role,
                  "disabled": before.disabled if change.disabled is None else change.disabled}
        changes = {k: {"from": getattr(before, k), "to": v}
                   for k, v in wanted.items() if getattr(before, k) != v}
        # The entry first: the database changes these columns only once it is written.
        await audit.record(tx, who, AuditAction.USER_UPDATED, resource_type="user",
                           resource_id=user_id, details={"changes": changes})
        user = await users.update_admin_fields(tx, user_id, change.platform_role,
                                               change.disabled)
        assert user is not None
        if user.disabled and not before.disabled:
            # An account disabled, as one taken over, keeps none of its invitations
            # (enabling it again does not bring them back).
            await keepers.on_disabled(tx, who, user_id, admin_id)
        if user.disabled:
            await keepers.revocation.set_user_disabled(user_id, True)
            await keepers.sessions.revoke_user(tx, user_id)
        if "platform_role" in changes:
            # Tokens carry the platform role: those minted so far die, and the next refresh
            # mints from the row this transaction leaves (it waits for it).
            cut = await keepers.sessions.cut_off(tx, user_id, end_sessions=False)
            await users.set_tokens_valid_after(tx, user_id, cut)
    if not user.disabled:
        await keepers.revocation.set_user_disabled(user_id, False)
    return user
