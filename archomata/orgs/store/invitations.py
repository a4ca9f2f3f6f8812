"""Invitations to join an org, accepted through a single-use mailed token.

The token names its org (`<org id hex>.<secret>`) so that accepting it can open a
transaction scoped to that org; the secret is what proves it, stored only hashed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from archomata.db import Tx
from archomata.identity.store.users import normalize_email
from archomata.tenancy.org_role import OrgRole
from archomata.web.pagination import Position


class RevokeReason(StrEnum):
    """Why an open invitation ended without being accepted (sql/008)."""

    INVITER_DEMOTED = "inviter_demoted"
    INVITER_DISABLED = "inviter_disabled"
    INVITER_NOT_ADMINISTRATOR = "inviter_not_administrator"
    INVITER_REMOVED = "inviter_removed"
    REVOKED = "revoked"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Invitation:
    id: UUID
    org_id: UUID
    email: str
    org_role: OrgRole
    role_ids: tuple[UUID, ...]
    group_ids: tuple[UUID, ...]
    invited_by: UUID | None
    expires_at: datetime
    created_at: datetime


def make_token(org_id: UUID) -> str:
    return f"{org_id.hex}.{secrets.token_urlsafe(32)}"


def org_of(token: str) -> UUID | None:
    prefix, _, secret = token.partition(".")
    try:
        return UUID(hex=prefix) if secret else None
    except ValueError:
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


COLUMNS = ("id, org_id, email, org_role, role_ids, group_ids, invited_by, expires_at, "
           "created_at")
# Open: neither accepted nor revoked (at most one per address and org, sql/008).
# Pending: open and not expired, the only ones a token can still use.
IS_OPEN = "accepted_at is null and revoked_at is null"
IS_PENDING = f"{IS_OPEN} and expires_at > now()"
# The inviter's authority, as acceptance re-checks it: still an administrator of the
# org, with an account that is not disabled.
INVITER_IS_ADMIN = """exists (
    select 1 from memberships m join users u on u.id = m.user_id
    where m.org_id = invitations.org_id and m.user_id = invitations.invited_by
      and m.org_role = 'administrator' and u.disabled_at is null)"""


def _invitation(r: asyncpg.Record) -> Invitation:
    return Invitation(r["id"], r["org_id"], r["email"], OrgRole(r["org_role"]),
                      tuple(r["role_ids"]), tuple(r["group_ids"]), r["invited_by"],
                      r["expires_at"], r["created_at"])


INSERT = f"""
    insert into invitations (org_id, email, email_normalized, org_role, role_ids, group_ids,
                             token_hash, invited_by, expires_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
    on conflict (org_id, email_normalized) where {IS_OPEN} do nothing
    returning {COLUMNS}
"""


async def insert(tx: Tx, org_id: UUID, email: str, org_role: OrgRole, role_ids: list[UUID],
                 group_ids: list[UUID], invited_by: UUID, ttl_seconds: int
                 ) -> tuple[Invitation, str] | None:
    """A new invitation and its token; None when the address has an open one (revoke
    or supersede it first)."""
    token = make_token(org_id)
    row = await tx.fetchrow(INSERT, org_id, email.strip(), normalize_email(email),
                            org_role.value, role_ids, group_ids, _digest(token), invited_by,
                            float(ttl_seconds))
    return (_invitation(row), token) if row else None


# A pending invitation with what acceptance must check.
_FIND = f"""
    select {COLUMNS}, {INVITER_IS_ADMIN} as inviter_is_admin,
           (select o.disabled_at is not null from orgs o where o.id = invitations.org_id)
               as org_disabled
    from invitations
"""
PENDING = f"{_FIND} where org_id = $1 and token_hash = $2 and {IS_PENDING}"


@dataclass(frozen=True)
class Found:
    """A pending invitation as its token finds it, with what acceptance must check."""

    invitation: Invitation
    inviter_is_admin: bool
    org_disabled: bool


async def pending(tx: Tx, org_id: UUID, token: str) -> Found | None:
    row = await tx.fetchrow(PENDING, org_id, _digest(token))
    return Found(_invitation(row), row["inviter_is_admin"], row["org_disabled"]) \
        if row else None


PENDING_BY_ID = f"{_FIND} where org_id = $1 and id = $2 and {IS_PENDING}"


async def pending_by_id(tx: Tx, org_id: UUID, invitation_id: UUID) -> Found | None:
    """The invitation if it is still pending: what an acceptance that waited for its
    second factor finds again (it keeps the id, never the token)."""
    row = await tx.fetchrow(PENDING_BY_ID, org_id, invitation_id)
    return Found(_invitation(row), row["inviter_is_admin"], row["org_disabled"]) \
        if row else None


LIST_PENDING = f"""
    select {COLUMNS} from invitations
    where org_id = $1 and {IS_PENDING}
      and ($2::timestamptz is null or (created_at, id) < ($2, $3))
    order by created_at desc, id desc
    limit $4
"""


async def list_pending(tx: Tx, org_id: UUID, after: Position | None,
                       limit: int) -> list[Invitation]:
    """Pending invitations, newest first, `limit` of them after `after`."""
    found = await tx.fetch(LIST_PENDING, org_id, after.at if after else None,
                           after.id if after else None, limit)
    return [_invitation(r) for r in found]


ACCEPT = f"""
    update invitations set accepted_at = now(), accepted_by = $3
    where org_id = $1 and id = $2 and {IS_PENDING} and {INVITER_IS_ADMIN}
    returning id
"""


async def accept(tx: Tx, org_id: UUID, invitation_id: UUID, user_id: UUID) -> bool:
    """Marks it used; False when another request used or revoked it first, or its
    inviter is no longer an administrator of the org.

    No lock on the inviter's membership is needed: whoever takes their authority away
    revokes this row in the same transaction (revoke_by_inviter), so one of the two
    updates waits for the other and then finds the row no longer open.
    """
    return await tx.fetchval(ACCEPT, org_id, invitation_id, user_id) is not None


REVOKE = f"""
    update invitations set revoked_at = now(), revoked_by = $3, revoked_reason = 'revoked'
    where org_id = $1 and id = $2 and {IS_PENDING}
    returning {COLUMNS}
"""


async def revoke(tx: Tx, org_id: UUID, invitation_id: UUID,
                 revoked_by: UUID) -> Invitation | None:
    """Ends a pending invitation; None when there is none of that id (used, expired,
    revoked, another org's)."""
    row = await tx.fetchrow(REVOKE, org_id, invitation_id, revoked_by)
    return _invitation(row) if row else None


REVOKE_BY_INVITER = f"""
    update invitations set revoked_at = now(), revoked_by = $3, revoked_reason = $4
    where ($1::uuid is null or org_id = $1) and invited_by = $2 and {IS_OPEN}
    returning {COLUMNS}
"""


async def revoke_by_inviter(tx: Tx, org_id: UUID | None, inviter_id: UUID,
                            revoked_by: UUID | None,
                            reason: RevokeReason) -> list[Invitation]:
    """Ends every open invitation the inviter sent to the org (to every org with None:
    only in a platform transaction), expired ones too, so that none outlives their
    authority."""
    found = await tx.fetch(REVOKE_BY_INVITER, org_id, inviter_id, revoked_by, reason.value)
    return [_invitation(r) for r in found]


SUPERSEDE = f"""
    update invitations set revoked_at = now(), revoked_by = $3,
                           revoked_reason = 'superseded'
    where org_id = $1 and email_normalized = $2 and {IS_OPEN}
    returning {COLUMNS}
"""


async def supersede(tx: Tx, org_id: UUID, email: str, revoked_by: UUID) -> list[Invitation]:
    """Ends the address's open invitation to the org, for a new one to replace it."""
    found = await tx.fetch(SUPERSEDE, org_id, normalize_email(email), revoked_by)
    return [_invitation(r) for r in found]


REVOKE_ORPHANED = f"""
    update invitations set revoked_at = now(), revoked_reason = 'inviter_not_administrator'
    where org_id = $1 and id = $2 and {IS_OPEN} and not {INVITER_IS_ADMIN}
    returning {COLUMNS}
"""


async def revoke_orphaned(tx: Tx, org_id: UUID, invitation_id: UUID) -> Invitation | None:
    """Ends the invitation if its inviter is no longer an administrator of the org."""
    row = await tx.fetchrow(REVOKE_ORPHANED, org_id, invitation_id)
    return _invitation(row) if row else None
