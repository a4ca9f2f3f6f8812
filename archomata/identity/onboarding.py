"""Creating people and their orgs: shared by registration, SSO sign-up and the CLI.

Registration never tells whether an address has an account (the contract's POST
/auth/register): the route hashes the password and answers 201 with the account it will
be (`Registration.user`, an id of the server's making), then `register` runs after the
answer (archomata.web.later). It writes the account under that id and mails the
verification link; or, for an address that has an account, writes nothing and mails the
account's owner that someone tried, so the id answered names no account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg
from redis.asyncio import Redis

from archomata import audit
from archomata.access import roles
from archomata.access.permissions import ADMINISTRATOR
from archomata.access.principal import PlatformRole
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, service_tx, signup_tx
from archomata.errors import Conflict
from archomata.identity.passwords import PasswordHasher
from archomata.identity.service import first_mail_in_a_while
from archomata.identity.store import mail_tokens, users
from archomata.identity.store.mail_tokens import Purpose
from archomata.identity.store.users import User
from archomata.mail import Mailer
from archomata.tenancy import orgs
from archomata.tenancy.org_role import OrgRole
from archomata.tenancy.orgs import Org


@dataclass(frozen=True, slots=True)
class NewAccount:
    user: User
    org: Org


async def create_user_with_org(pool: asyncpg.Pool, who: AuditContext, *,
                               email: str, name: str, password_hash: str | None,
                               org_name: str, verified: bool) -> NewAccount:
    """A user, an org they administer, and the audit entry, in one transaction."""
    async with signup_tx(pool) as tx:
        return await _create(tx, who, email=email, name=name, password_hash=password_hash,
                             org_name=org_name, verified=verified)


async def create_in(tx: Tx, who: AuditContext, *, email: str, name: str,
                    password_hash: str | None, org_name: str, verified: bool) -> NewAccount:
    """As create_user_with_org, inside the caller's transaction (opened with `signup_tx`),
    so that what else the caller writes (an SSO identity) commits with the account. The
    new user signs themselves up: they are the entry's actor."""
    return await _create(tx, who, email=email, name=name, password_hash=password_hash,
                         org_name=org_name, verified=verified, by_themselves=True)


def _taken() -> Conflict:
    return Conflict("An account with this email already exists.", code="email_taken")


async def _create(tx: Tx, who: AuditContext, *, email: str, name: str,
                  password_hash: str | None, org_name: str, verified: bool,
                  by_themselves: bool = False, answered: User | None = None) -> NewAccount:
    user = await users.insert(tx, email=email, name=name, password_hash=password_hash,
                              verified=verified, user_id=answered.id if answered else None,
                              created_at=answered.created_at if answered else None)
    if user is None:
        raise _taken()
    if by_themselves:
        who = who.as_user(user.id)
    org = await orgs.insert(tx, org_name)
    await _make_admin(tx, org.id, user.id)
    await audit.record(tx, who, AuditAction.USER_REGISTERED, resource_type="user",
                       resource_id=user.id, org_id=org.id,
                       details={"email": user.email, "org_name": org.name})
    return NewAccount(user, org)


@dataclass(frozen=True, slots=True)
class Registration:
    """What someone registers, and the account the answer names before it is written."""

    email: str
    name: str
    org_name: str
    password_hash: str
    user: User  # the answer's: a fresh id, whether or not the address has an account


def registration(*, email: str, name: str, org_name: str, password_hash: str) -> Registration:
    user = User(uuid4(), email.strip(), name, None, False, PlatformRole.USER, False, None,
                datetime.now(UTC))
    return Registration(email, name, org_name, password_hash, user)


# The per-account cool-down of "someone tried to register" mails (as for mail links).
ATTEMPT_MAIL = "registration_attempt"


async def register(pool: asyncpg.Pool, redis: Redis, mailer: Mailer, who: AuditContext,
                   asked: Registration, verify_ttl: int) -> None:
    """After the answer: a new unverified user (under the id answered) with their org,
    registering themselves (the entry's actor), and their verification mail; or, for an
    address with an account (any spelling the lookup folds onto it), a mail to the
    account's owner instead, at most one a cool-down."""
    try:
        async with signup_tx(pool) as tx:
            account = await _create(tx, who, email=asked.email, name=asked.name,
                                    password_hash=asked.password_hash,
                                    org_name=asked.org_name, verified=False,
                                    by_themselves=True, answered=asked.user)
            token = await mail_tokens.issue(tx, account.user.id, Purpose.VERIFY_EMAIL,
                                            verify_ttl)
    except Conflict as exc:
        if exc.code != _taken().code:
            raise
        await _tell_owner(pool, redis, mailer, asked.email)
        return
    await mailer.send_verification(account.user.email, token)


async def _tell_owner(pool: asyncpg.Pool, redis: Redis, mailer: Mailer, email: str) -> None:
    async with service_tx(pool) as tx:
        owner = await users.get_by_email(tx, email)
    if owner is not None and await first_mail_in_a_while(redis, owner.id, ATTEMPT_MAIL):
        await mailer.send_registration_attempt(owner.email)


async def _make_admin(tx: Tx, org_id: UUID, user_id: UUID) -> None:
    await orgs.add_member(tx, org_id, user_id, OrgRole.ADMINISTRATOR)
    await roles.assign_by_name(tx, org_id, user_id, ADMINISTRATOR)


class MailboxMismatchError(ValueError):
    """An existing account matches the email only through a looser spelling."""


async def ensure_platform_admin(pool: asyncpg.Pool, hasher: PasswordHasher, *, email: str,
                                password: str, name: str = "Platform administrator") -> User:
    """Creates a verified platform administrator with no org, or promotes and re-keys an
    existing account of that email."""
    password_hash = await hasher.hash(password)
    async with service_tx(pool) as tx:
        user = await users.insert(tx, email=email, name=name, password_hash=password_hash,
                                  verified=True)
        action = AuditAction.USER_CREATED
        if user is None:
            existing = await users.get_by_email(tx, email)
            assert existing is not None
            if not users.same_mailbox(existing.email, email):
                raise MailboxMismatchError(
                    f"an account exists as {existing.email!r}, which the lookup takes for "
                    f"{email!r} but may be another mailbox: give its exact address")
            await users.set_password_hash(tx, existing.id, password_hash)
            user = await users.mark_verified(tx, existing.id)
            action = AuditAction.USER_UPDATED
        assert user is not None
        role = PlatformRole.PLATFORM_ADMINISTRATOR
        # The entry first: the database changes the platform role only once it is written.
        await audit.record(tx, AuditContext.system(), action, resource_type="user",
                           resource_id=user.id,
                           details={"email": user.email, "platform_role": role})
        user = await users.update_admin_fields(tx, user.id, role, None)
        assert user is not None
    return user
