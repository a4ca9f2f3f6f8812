"""The `archomata` command line: serve, migrate, create-admin, rotate-data-key, backup,
restore, audit, dev."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from archomata import logs
from archomata.config import ConfigError, load_config
from archomata.http.server import PortInUseError

# Each command's implementation is in archomata/ops/; here only its arguments and dispatch.
from archomata.ops.cli_admin import create_admin
from archomata.ops.cli_audit import audit
from archomata.ops.cli_migrate import migrate
from archomata.ops.cli_rotate import rotate_data_key
from archomata.ops.cli_serve import serve


def _audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from datetime import UTC, datetime

    from archomata.audit.chain import chain_arg

    def instant(text: str) -> datetime:
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    audit_commands = commands.add_parser("audit", help="the audit log's hash chains"
                                         ).add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="walk the hash chains; exit 1 if broken")
    verify.add_argument("--witness", action="append", default=[], metavar="FILE",
                        help="signed heads written by `audit anchor --output`: an entry "
                             "they name must be there unchanged (repeatable)")
    anchor = audit_commands.add_parser("anchor", help="record checkpoints before archiving, "
                                       "or write signed heads for an outside witness")
    anchor.add_argument("--before", type=instant,
                        help="anchor each chain at its last entry before this instant")
    anchor.add_argument("--output", metavar="FILE",
                        help="write each chain's head, signed with ARCHOMATA_AUDIT_KEY, to "
                             "FILE (`-`: standard output), to keep outside the database")
    for sub in (verify, anchor):
        sub.add_argument("--org", type=chain_arg, help="one org's chain (`none`: no org)")


def _backup_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = commands.add_parser("backup", help="pg_dump as the owner, sealed with "
                                 "AES-256-GCM under ARCHOMATA_BACKUP_KEY")
    backup.add_argument("--output", help="the file to write (`-`: standard output)")
    verify = backup.add_subparsers(dest="backup_command").add_parser(
        "verify", help="authenticate a backup file without restoring it")
    verify.add_argument("--input", required=True)
    restore = commands.add_parser("restore", help="authenticate a backup whole, then "
                                  "pg_restore it into an empty database")
    restore.add_argument("--input", required=True)


def _workers(text: str) -> int:
    from archomata.ops.workers import worker_count

    try:
        return worker_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="archomata", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="serve the API (configuration from "
                                        "ARCHOMATA_*)")
    serve_command.add_argument("--workers", type=_workers, metavar="N|auto",
                               help="N processes on the port (auto: one per core), "
                               "restarted when they die")
    commands.add_parser("migrate", help="apply pending migrations as the schema owner")
    admin = commands.add_parser("create-admin", help="create or promote a platform administrator")
    admin.add_argument("--email", required=True)
    _audit_parser(commands)
    commands.add_parser("rotate-data-key", help="re-encrypt stored secrets under "
                        "ARCHOMATA_DATA_KEY (old keys in ARCHOMATA_DATA_KEY_PREVIOUS)")
    _backup_parsers(commands)
    dev = commands.add_parser("dev", help="local PostgreSQL + Redis + mail sink, then serve")
    dev.add_argument("--data-dir", default=os.environ.get("ARCHOMATA_DEV_DIR", ".local"))
    dev.add_argument("action", nargs="?", choices=["env"],
                     help="env: print the stack's settings as shell exports (its "
                          "development secrets included), for eval in another shell")
    return root


def _backup(args: argparse.Namespace) -> int:
    from archomata.ops import cli_backup
    from archomata.ops.backup_stream import BackupError

    try:
        if args.command == "restore":
            return cli_backup.restore(args.input)
        if args.backup_command == "verify":
            return cli_backup.verify(args.input)
        if not args.output:
            raise ConfigError("backup needs --output FILE (or `-` for standard output)")
        return cli_backup.backup(args.output)
    except BackupError as exc:
        print(f"archomata: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure()
    try:
        if args.command == "serve":
            return serve(load_config(), args.workers)
        elif args.command == "migrate":
            migrate()
        elif args.command == "create-admin":
            create_admin(args.email)
        elif args.command == "audit":
            return audit(args)
        elif args.command == "rotate-data-key":
            return rotate_data_key()
        elif args.command in ("backup", "restore"):
            return _backup(args)
        elif args.command == "dev":
            from archomata.ops.dev import print_env, run_dev

            if args.action == "env":
                print_env(args.data_dir)
            else:
                run_dev(args.data_dir)
    except ConfigError as exc:
        print(f"archomata: configuration error: {exc}", file=sys.stderr)
        return 2
    except PortInUseError as exc:  # a newcomer's second `make run`: one line, no traceback
        print(f"archomata: {exc.strerror}", file=sys.stderr)
        return 2
    except Exception as exc:
        from archomata.app import SchemaOutdatedError
        from archomata.ops.migrations import MigrationError

        if isinstance(exc, SchemaOutdatedError | MigrationError):
            print(f"archomata: {exc}", file=sys.stderr)
            return 3
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
