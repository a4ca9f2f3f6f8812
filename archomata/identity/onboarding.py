"""Creating people and their orgs: shared by registration, SSO sign-up and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from archomata import audit
from archomata.access import store as roles
from archomata.access.permissions import ADMINISTRATOR
from archomata.access.principal import OrgRole, PlatformRole
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx, service_tx, signup_tx
from archomata.errors import Conflict
from archomata.identity.passwords import PasswordHasher
from archomata.identity.signin import as_user
from archomata.identity.store import mail_tokens, users
from archomata.identity.store.mail_tokens import Purpose
from archomata.identity.store.users import User
from archomata.orgs.store import orgs
from archomata.orgs.store.orgs import Org


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


async def _create(tx: Tx, who: AuditContext, *, email: str, name: str,
                  password_hash: str | None, org_name: str, verified: bool,
                  by_themselves: bool = False) -> NewAccount:
    user = await users.insert(tx, email=email, name=name, password_hash=password_hash,
                              verified=verified)
    if user is None:
        raise Conflict("An account with this email already exists.", code="email_taken")
    if by_themselves:
        who = as_user(who, user.id)
    org = await orgs.insert(tx, org_name)
    await _make_admin(tx, org.id, user.id)
    await audit.record(tx, who, AuditAction.USER_REGISTERED, resource_type="user",
                       resource_id=user.id, org_id=org.id,
                       details={"email": user.email, "org_name": org.name})
    return NewAccount(user, org)


async def register(pool: asyncpg.Pool, who: AuditContext, *, email: str, name: str,
                   password_hash: str, org_name: str, verify_ttl: int) -> tuple[NewAccount, str]:
    """A new unverified user with their org, and the token of their verification mail;
    the user registers themselves (the entry's actor)."""
    async with signup_tx(pool) as tx:
        account = await _create(tx, who, email=email, name=name,
                                password_hash=password_hash, org_name=org_name, verified=False,
                                by_themselves=True)
        token = await mail_tokens.issue(tx, account.user.id, Purpose.VERIFY_EMAIL, verify_ttl)
    return account, token


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
