"""The `archomata` command line: serve, migrate, create-admin, rotate-data-key, dev."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Sequence

from archomata import logs, server
from archomata.config import Config, ConfigError, load_config

log = logging.getLogger("archomata")


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: Config) -> None:
    from archomata.app import create_app

    if config.database_owner_url_is_default:
        log.warning("ARCHOMATA_DATABASE_OWNER_URL is not set: the service connects as the schema "
                    "owner, so row-level security is not enforced on it")
    _use_uvloop()
    # Not web.run_app: archomata.server holds the connection limits and TLS settings
    # that the tests start the service with too.
    server.run(create_app(config), config)


def _database_urls(environ: os._Environ[str] | dict[str, str]) -> tuple[str, str]:
    runtime = environ.get("ARCHOMATA_DATABASE_URL", "").strip()
    if not runtime:
        raise ConfigError("ARCHOMATA_DATABASE_URL is required")
    owner = environ.get("ARCHOMATA_DATABASE_OWNER_URL", "").strip() or runtime
    return owner, runtime


def migrate() -> None:
    from archomata.migrations import migrate as run_migrations

    owner, runtime = _database_urls(os.environ)
    applied = asyncio.run(run_migrations(owner, runtime))
    print(f"migrations applied: {len(applied)}" +
          (f" ({', '.join(f'{m.version:03d}_{m.name}' for m in applied)})" if applied else ""))


def _read_new_password() -> str:
    from archomata.security.passwords import MAX_LENGTH, MIN_LENGTH

    password = os.environ.get("ARCHOMATA_ADMIN_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError("set ARCHOMATA_ADMIN_PASSWORD or run on a terminal to be asked")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the passwords differ")
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise ConfigError(f"the password must be {MIN_LENGTH} to {MAX_LENGTH} characters")
    return password


def create_admin(email: str) -> None:
    from archomata.db import create_pool
    from archomata.onboarding import MailboxMismatchError, ensure_platform_admin
    from archomata.security.passwords import PasswordHasher

    password = _read_new_password()
    _, runtime = _database_urls(os.environ)
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


def audit(args: argparse.Namespace) -> int:
    """`audit verify` walks the hash chains; `audit anchor` records checkpoints before an
    archive (docs/audit-retention.md). Both as the schema owner."""
    from archomata.audit import chain as audit_chain

    owner, _ = _database_urls(os.environ)
    if args.audit_command == "verify":
        return asyncio.run(audit_chain.run_verify(owner, args.org))
    return asyncio.run(audit_chain.run_anchor(owner, args.before, args.org))


def _audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from datetime import UTC, datetime

    from archomata.audit.chain import chain_arg

    def instant(text: str) -> datetime:
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    audit_commands = commands.add_parser("audit", help="the audit log's hash chains"
                                         ).add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="walk the hash chains; exit 1 if broken")
    anchor = audit_commands.add_parser("anchor", help="record checkpoints before archiving")
    anchor.add_argument("--before", type=instant, required=True,
                        help="anchor each chain at its last entry before this instant")
    for sub in (verify, anchor):
        sub.add_argument("--org", type=chain_arg, help="one org's chain (`none`: no org)")


def rotate_data_key() -> int:
    """Re-encrypts stored secrets under ARCHOMATA_DATA_KEY; the key(s) they were sealed
    with must be in ARCHOMATA_DATA_KEY_PREVIOUS. Exit 1 when some secret did not open."""
    from archomata.credentials import Rotation, rotate_all
    from archomata.db import create_pool
    from archomata.security.crypto import DataKeys, UnknownKeyError

    config = load_config()
    data_keys = DataKeys(config.data_key.reveal(),
                         [k.reveal() for k in config.data_key_previous])

    async def run() -> Rotation:
        pool = await create_pool(config.database_url.reveal(), min_size=1, max_size=1)
        try:
            return await rotate_all(pool, data_keys)
        finally:
            await pool.close()

    try:
        done = asyncio.run(run())
    except UnknownKeyError as exc:
        raise ConfigError(f"a stored secret is {exc}: put that key in "
                          "ARCHOMATA_DATA_KEY_PREVIOUS; nothing was changed") from None
    print(f"data key {data_keys.current_id}: {done.resealed} of {done.stored} stored secrets "
          "re-encrypted")
    if done.unreadable:
        print(f"archomata: {len(done.unreadable)} stored secrets do not open under their key "
              "(tampered with, or copied from another account) and were left as they are: "
              f"accounts {', '.join(map(str, done.unreadable))}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="archomata", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the API (configuration from ARCHOMATA_*)")
    commands.add_parser("migrate", help="apply pending migrations as the schema owner")
    admin = commands.add_parser("create-admin", help="create or promote a platform administrator")
    admin.add_argument("--email", required=True)
    _audit_parser(commands)
    commands.add_parser("rotate-data-key", help="re-encrypt stored secrets under "
                        "ARCHOMATA_DATA_KEY (old keys in ARCHOMATA_DATA_KEY_PREVIOUS)")
    dev = commands.add_parser("dev", help="local PostgreSQL + Redis + mail sink, then serve")
    dev.add_argument("--data-dir", default=os.environ.get("ARCHOMATA_DEV_DIR", ".local"))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure()
    try:
        if args.command == "serve":
            serve(load_config())
        elif args.command == "migrate":
            migrate()
        elif args.command == "create-admin":
            create_admin(args.email)
        elif args.command == "audit":
            return audit(args)
        elif args.command == "rotate-data-key":
            return rotate_data_key()
        elif args.command == "dev":
            from archomata.dev import run_dev

            run_dev(args.data_dir)
    except ConfigError as exc:
        print(f"archomata: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from archomata.app import SchemaOutdatedError
        from archomata.migrations import MigrationError

        if isinstance(exc, SchemaOutdatedError | MigrationError):
            print(f"archomata: {exc}", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
