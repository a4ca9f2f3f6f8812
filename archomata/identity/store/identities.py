"""Identities at OpenID providers (Google, Azure AD) linked to users. Not org-scoped:
like users, an identity belongs to a person, whatever orgs they are in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from archomata.db import Tx


@dataclass(frozen=True)
class Identity:
    id: UUID
    user_id: UUID
    provider: str
    subject: str
    email: str | None
    linked_at: datetime


COLUMNS = "id, user_id, provider, subject, email, linked_at"


def _identity(row: asyncpg.Record | None) -> Identity | None:
    if row is None:
        return None
    return Identity(row["id"], row["user_id"], row["provider"], row["subject"], row["email"],
                    row["linked_at"])


GET_BY_SUBJECT = f"select {COLUMNS} from user_identities where provider = $1 and subject = $2"


async def get_by_subject(tx: Tx, provider: str, subject: str) -> Identity | None:
    return _identity(await tx.fetchrow(GET_BY_SUBJECT, provider, subject))


INSERT = f"""
    insert into user_identities (user_id, provider, subject, email)
    values ($1, $2, $3, $4)
    on conflict (provider, subject) do nothing
    returning {COLUMNS}
"""


async def insert(tx: Tx, user_id: UUID, provider: str, subject: str,
                 email: str | None) -> Identity | None:
    """The new link, or None when this (provider, subject) is already linked."""
    return _identity(await tx.fetchrow(INSERT, user_id, provider, subject, email))


UPDATE_EMAIL = f"""
    update user_identities set email = $2 where id = $1 and email is distinct from $2
    returning {COLUMNS}
"""


async def update_email(tx: Tx, identity_id: UUID, email: str | None) -> None:
    """Keeps the shown address current; it decides nothing."""
    await tx.execute(UPDATE_EMAIL, identity_id, email)


LIST_FOR_USER = f"""
    select {COLUMNS} from user_identities where user_id = $1 order by linked_at, id
"""


async def list_for_user(tx: Tx, user_id: UUID) -> list[Identity]:
    return [i for r in await tx.fetch(LIST_FOR_USER, user_id)
            if (i := _identity(r)) is not None]


# The user's row is locked first, so two unlinks of the same person take turns and
# cannot both see "another way to sign in remains".
LOCK_SIGN_IN_METHODS = """
    select u.password_hash is not null as has_password,
           (select count(*) from user_identities i where i.user_id = u.id) as identities
    from users u where u.id = $1
    for update of u
"""


@dataclass(frozen=True)
class SignInMethods:
    has_password: bool
    identities: int


async def lock_sign_in_methods(tx: Tx, user_id: UUID) -> SignInMethods:
    row = await tx.fetchrow(LOCK_SIGN_IN_METHODS, user_id)
    if row is None:
        return SignInMethods(False, 0)
    return SignInMethods(row["has_password"], row["identities"])


DELETE = f"delete from user_identities where id = $1 and user_id = $2 returning {COLUMNS}"


async def delete(tx: Tx, identity_id: UUID, user_id: UUID) -> Identity | None:
    """The removed link, or None when the user has no such identity."""
    return _identity(await tx.fetchrow(DELETE, identity_id, user_id))


# The pre-hijacking defence: someone registered this email without ever proving it. The
# verified identity takes the account over, and whatever that someone set is wiped.
RESET_UNVERIFIED_USER = """
    update users set password_hash = null, email_verified_at = now(), updated_at = now()
    where id = $1 and email_verified_at is null
    returning id
"""


async def reset_unverified_user(tx: Tx, user_id: UUID) -> bool:
    """Dangerous: removes the password of an account whose email was never verified and
    marks it verified. Only for a verified SSO identity asserting that same email. False
    when the account was verified meanwhile (nothing changed)."""
    return await tx.fetchval(RESET_UNVERIFIED_USER, user_id) is not None
