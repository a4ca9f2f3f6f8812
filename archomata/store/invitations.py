"""Invitations to join an org, accepted through a single-use mailed token.

The token names its org (`<org id hex>.<secret>`) so that accepting it can open a
transaction scoped to that org; the secret is what proves it, stored only hashed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from archomata.db import Tx
from archomata.security.principal import OrgRole
from archomata.store.users import normalize_email


@dataclass(frozen=True)
class Invitation:
    id: UUID
    org_id: UUID
    email: str
    org_role: OrgRole
    role_ids: tuple[UUID, ...]
    group_ids: tuple[UUID, ...]
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


COLUMNS = "id, org_id, email, org_role, role_ids, group_ids, expires_at, created_at"


def _invitation(r: asyncpg.Record) -> Invitation:
    return Invitation(r["id"], r["org_id"], r["email"], OrgRole(r["org_role"]),
                      tuple(r["role_ids"]), tuple(r["group_ids"]), r["expires_at"],
                      r["created_at"])


INSERT = f"""
    insert into invitations (org_id, email, email_normalized, org_role, role_ids, group_ids,
                             token_hash, invited_by, expires_at)
    values ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))
    returning {COLUMNS}
"""


async def insert(tx: Tx, org_id: UUID, email: str, org_role: OrgRole, role_ids: list[UUID],
                 group_ids: list[UUID], invited_by: UUID, ttl_seconds: int
                 ) -> tuple[Invitation, str]:
    token = make_token(org_id)
    row = await tx.fetchrow(INSERT, org_id, email.strip(), normalize_email(email),
                            org_role.value, role_ids, group_ids, _digest(token), invited_by,
                            float(ttl_seconds))
    return _invitation(row), token


PENDING = f"""
    select {COLUMNS} from invitations
    where org_id = $1 and token_hash = $2 and accepted_at is null and expires_at > now()
"""


async def pending(tx: Tx, org_id: UUID, token: str) -> Invitation | None:
    row = await tx.fetchrow(PENDING, org_id, _digest(token))
    return _invitation(row) if row else None


ACCEPT = """
    update invitations set accepted_at = now(), accepted_by = $3
    where org_id = $1 and id = $2 and accepted_at is null and expires_at > now()
    returning id
"""


async def accept(tx: Tx, org_id: UUID, invitation_id: UUID, user_id: UUID) -> bool:
    """Marks it used; False when another request used it first."""
    return await tx.fetchval(ACCEPT, org_id, invitation_id, user_id) is not None
