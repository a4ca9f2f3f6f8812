"""`archomata create-admin`: a verified platform administrator, created or promoted."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys

from archomata.config import ConfigError
from archomata.ops.database_urls import database_urls


def read_new_password() -> str:
    from archomata.errors import ValidationFailed
    from archomata.identity import new_password

    password = os.environ.get("ARCHOMATA_ADMIN_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError("set ARCHOMATA_ADMIN_PASSWORD or run on a terminal to be asked")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the passwords differ")
    try:
        new_password.check(password)
    except ValidationFailed as refused:
        raise ConfigError(f"the password cannot be used: {refused.detail}") from None
    return password


def create_admin(email: str) -> None:
    from archomata.db import create_pool
    from archomata.identity.onboarding import MailboxMismatchError, ensure_platform_admin
    from archomata.identity.passwords import PasswordHasher

    password = read_new_password()
    _, runtime = database_urls(os.environ)
    rounds = int(os.environ.get("ARCHOMATA_BCRYPT_ROUNDS", "12"))

    async def run() -> None:
        pool = await create_pool(runtime, min_size=1, max_size=1)
        hasher = PasswordHasher(rounds, 1)
        try:
            user = await ensure_platform_admin(pool, hasher, email=email, password=password)
        finally:
            hasher.close()
            await pool.close()
        print(f"platform administrator ready: {user.email} ({user.id})")

    try:
        asyncio.run(run())
    except MailboxMismatchError as exc:
        raise SystemExit(f"archomata: {exc}") from None
