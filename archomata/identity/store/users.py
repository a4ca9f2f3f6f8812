"""Users: people who sign in. Not org-scoped: one person may belong to many orgs."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from archomata.access.principal import PlatformRole
from archomata.db import Tx


def normalize_email(email: str) -> str:
    """The form emails are compared in: NFKC, trimmed, case-folded."""
    return unicodedata.normalize("NFKC", email).strip().casefold()


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _mailbox(email: str) -> str:
    return unicodedata.normalize("NFC", email.strip()).translate(_ASCII_LOWER)


def same_mailbox(ours: str, theirs: str) -> bool:
    """Whether `theirs` (an identity provider's email, an operator's) surely names the
    mailbox of our account's email `ours`.

    The user lookup (normalize_email: NFKC and full case folding) is deliberately loose,
    so that one person cannot hold two accounts by varying the spelling. Too loose to
    hand an account over: `straße@` and `strasse@` are different mailboxes (and different
    domains since IDNA 2008), as can be a fullwidth or ligature spelling and its ASCII
    look-alike, or `İ` and `i̇`; whoever vouches for one says nothing about the other. So
    what hands an account over (an SSO link, the takeover of an unverified account,
    `create-admin` re-keying an existing one) also asks for the same address up to what
    mail systems really treat as equal: canonically equivalent Unicode (NFC) and the case
    of ASCII letters, which every provider normalises on its own. Anything else is
    refused, and the person signs in with their password.
    """
    return _mailbox(ours) == _mailbox(theirs)


@dataclass(frozen=True)
class User:
    id: UUID
    email: str
    name: str
    password_hash: str | None
    email_verified: bool
    platform_role: PlatformRole
    disabled: bool
    tokens_valid_after: datetime | None
    created_at: datetime


COLUMNS = """id, email, name, password_hash, email_verified_at is not null as email_verified,
             platform_role, disabled_at is not null as disabled, tokens_valid_after, created_at"""


def _user(row: asyncpg.Record | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["email"], row["name"], row["password_hash"],
                row["email_verified"], PlatformRole(row["platform_role"]), row["disabled"],
                row["tokens_valid_after"], row["created_at"])


# Every new user starts with the platform role `user`: the runtime role may not write
# the column (sql/020); `update_admin_fields` is the way to another.
INSERT = f"""
    insert into users (id, email, email_normalized, name, password_hash, email_verified_at,
                       created_at)
    values (coalesce($6, gen_random_uuid()), $1, $2, $3, $4, case when $5 then now() end,
            coalesce($7, now()))
    on conflict (email_normalized) do nothing
    returning {COLUMNS}
"""


async def insert(tx: Tx, *, email: str, name: str, password_hash: str | None,
                 verified: bool, user_id: UUID | None = None,
                 created_at: datetime | None = None) -> User | None:
    """The new user, or None when the email is taken. `user_id` and `created_at`, when
    given, are those an answer already told (a registration answered before its write)."""
    row = await tx.fetchrow(INSERT, email.strip(), normalize_email(email), name,
                            password_hash, verified, user_id, created_at)
    return _user(row)


GET_BY_EMAIL = f"select {COLUMNS} from users where email_normalized = $1"


async def get_by_email(tx: Tx, email: str) -> User | None:
    return _user(await tx.fetchrow(GET_BY_EMAIL, normalize_email(email)))


GET = f"select {COLUMNS} from users where id = $1"
GET_SHARED = GET + " for share"


async def get(tx: Tx, user_id: UUID, *, settled: bool = False) -> User | None:
    """With `settled`, waits for a change of the row under way to commit or roll back
    and answers what it left (so what a token is minted from is never older than a
    revocation that the token passed)."""
    return _user(await tx.fetchrow(GET_SHARED if settled else GET, user_id))


SET_PASSWORD = f"""
    update users set password_hash = $2, updated_at = now() where id = $1 returning {COLUMNS}
"""


async def set_password_hash(tx: Tx, user_id: UUID, password_hash: str) -> User | None:
    return _user(await tx.fetchrow(SET_PASSWORD, user_id, password_hash))


REPLACE_PASSWORD = f"""
    update users set password_hash = $3, updated_at = now()
    where id = $1 and password_hash = $2 returning {COLUMNS}
"""


async def replace_password_hash(tx: Tx, user_id: UUID, verified_hash: str,
                                new_hash: str) -> User | None:
    """Replaces the hash a caller just verified a password against (by a stronger one,
    or a new password's); None, writing nothing, when the password changed meanwhile:
    a proof of the old password must not undo that change."""
    return _user(await tx.fetchrow(REPLACE_PASSWORD, user_id, verified_hash, new_hash))


MARK_VERIFIED = f"""
    update users set email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
    where id = $1 returning {COLUMNS}
"""


async def mark_verified(tx: Tx, user_id: UUID) -> User | None:
    return _user(await tx.fetchrow(MARK_VERIFIED, user_id))


SET_TOKENS_VALID_AFTER = """
    update users set tokens_valid_after = greatest(tokens_valid_after,
                         timestamptz 'epoch' + $2::bigint * interval '1 microsecond'),
                     updated_at = now()
    where id = $1
"""


async def set_tokens_valid_after(tx: Tx, user_id: UUID, cut_us: int) -> None:
    """Keeps the cut SessionStore.cut_off made in Redis (µs, exact), for the revocation
    state to be rebuilt from; never moves it back."""
    await tx.execute(SET_TOKENS_VALID_AFTER, user_id, cut_us)


LIST_PAGE = f"""
    select {COLUMNS} from users
    where ($1::timestamptz is null or (created_at, id) < ($1, $2))
    order by created_at desc, id desc
    limit $3
"""


async def list_page(tx: Tx, after: tuple[datetime, UUID] | None, limit: int) -> list[User]:
    at, last_id = after if after else (None, None)
    return [u for r in await tx.fetch(LIST_PAGE, at, last_id, limit)
            if (u := _user(r)) is not None]


# The runtime role cannot write these columns: the owner's function does, once the
# change's audit entry is in this transaction (sql/020).
UPDATE_ADMIN_FIELDS = f"select {COLUMNS} from admin_update_user($1, $2, $3)"


async def update_admin_fields(tx: Tx, user_id: UUID, platform_role: PlatformRole | None,
                              disabled: bool | None) -> User | None:
    """Sets the platform role and the disabled mark (None: unchanged). Record the
    change's `user.updated` (or `user.created`) entry in `tx` first: without it the
    database refuses."""
    return _user(await tx.fetchrow(UPDATE_ADMIN_FIELDS, user_id,
                                   platform_role.value if platform_role else None, disabled))
