"""Schema migrations: numbered plain SQL files in `sql/`, applied in order as the owner.

Each file runs in its own transaction and is recorded in `schema_migrations` with a
checksum; a landed file is never edited, so a changed checksum stops the run. A
session-level advisory lock makes concurrent runs take turns: the second finds nothing
left to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

log = logging.getLogger(__name__)

RUNTIME_GROUP_ROLE = "archomata_runtime"
# pg_advisory_lock key: the first 8 bytes of sha256("archomata.migrate"), as a signed int.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"archomata.migrate").digest()[:8], "big", signed=True)
FILE_PATTERN = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migrations on disk and in the database disagree, or a file failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def sql_dir() -> Path:
    configured = os.environ.get("ARCHOMATA_SQL_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "sql"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number")
    return migrations


def expected_version(directory: Path | None = None) -> int:
    return max((m.version for m in discover(directory)), default=0)


async def current_version(conn: asyncpg.Connection) -> int | None:
    """The newest applied version, or None when the database was never migrated.

    One statement, so one round trip once the connection has it prepared: readiness
    asks it of every probe. Call it outside a transaction (a missing table aborts one)."""
    try:
        version: int = await conn.fetchval(CURRENT_VERSION)
    except asyncpg.UndefinedTableError:
        return None
    return version


CURRENT_VERSION = "select coalesce(max(version), 0) from schema_migrations"


def _role_of(dsn: str) -> tuple[str, str | None]:
    parts = urlsplit(dsn)
    if not parts.username:
        raise MigrationError("ARCHOMATA_DATABASE_URL must name its user")
    password = unquote(parts.password) if parts.password else None
    return unquote(parts.username), password


async def ensure_roles(conn: asyncpg.Connection, runtime_dsn: str | None) -> None:
    has_group = await conn.fetchval("select 1 from pg_roles where rolname = $1",
                                    RUNTIME_GROUP_ROLE)
    if not has_group:
        # Roles are cluster-wide: another database's migration may have made it first.
        with contextlib.suppress(asyncpg.DuplicateObjectError):
            await conn.execute(f"create role {RUNTIME_GROUP_ROLE} nologin")
    database = await _quote_ident(conn, await conn.fetchval("select current_database()"))
    await conn.execute(f"grant connect on database {database} to {RUNTIME_GROUP_ROLE}")
    if runtime_dsn is None:
        return
    user, password = _role_of(runtime_dsn)
    owner = await conn.fetchval("select current_user")
    if user == owner:
        log.warning("the runtime role is the schema owner: row-level security is not enforced")
        return
    ident = await _quote_ident(conn, user)
    row = await conn.fetchrow(
        "select rolsuper, rolbypassrls from pg_roles where rolname = $1", user)
    if row is None:
        literal = await conn.fetchval("select quote_literal($1)", password) if password else None
        await conn.execute(f"create role {ident} login nosuperuser nobypassrls nocreatedb "
                           f"nocreaterole" + (f" password {literal}" if literal else ""))
    elif row["rolsuper"] or row["rolbypassrls"]:
        raise MigrationError(f"runtime role {user!r} is a superuser or bypasses row-level "
                             "security; use a plain login role")
    await conn.execute(f"grant {RUNTIME_GROUP_ROLE} to {ident}")


# What makes a role unfit to serve: row-level security does not hold for a superuser, a
# role with BYPASSRLS, or the owner of a table (FORCE ROW LEVEL SECURITY aside, the owner
# may also switch it off or drop the policy). A member of the owner role counts as it:
# with INHERIT it has the owner's rights, without, one SET ROLE away.
_ROLE_POWERS = """
    select current_user as name, r.rolsuper, r.rolbypassrls,
           exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                   where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
                     and pg_has_role(current_user, c.relowner, 'MEMBER')) as owns_tables
    from pg_roles r where r.rolname = current_user
"""


async def role_problems(conn: asyncpg.Connection) -> list[str]:
    """Why the connection's role must not serve requests (none for the runtime role)."""
    row = await conn.fetchrow(_ROLE_POWERS)
    problems = []
    if row["rolsuper"]:
        problems.append("is a superuser")
    if row["rolbypassrls"]:
        problems.append("has BYPASSRLS")
    if row["owns_tables"]:
        problems.append("owns tables of the schema (or is a member of their owner)")
    return [f"database role {row['name']!r} {problem}" for problem in problems]


async def _quote_ident(conn: asyncpg.Connection, name: str) -> str:
    quoted: str = await conn.fetchval("select quote_ident($1)", name)
    return quoted


async def migrate(owner_dsn: str, runtime_dsn: str | None = None,
                  directory: Path | None = None) -> list[Migration]:
    """Applies every pending migration; returns those it applied."""
    migrations = discover(directory)
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
        try:
            return await _migrate_locked(conn, migrations, runtime_dsn)
        finally:
            await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def _migrate_locked(conn: asyncpg.Connection, migrations: list[Migration],
                          runtime_dsn: str | None) -> list[Migration]:
    await conn.execute("""
        create table if not exists schema_migrations (
            version    integer primary key,
            name       text not null,
            checksum   text not null,
            applied_at timestamptz not null default now()
        )""")
    await ensure_roles(conn, runtime_dsn)
    await conn.execute(f"grant select on schema_migrations to {RUNTIME_GROUP_ROLE}")
    applied = {r["version"]: r["checksum"]
               for r in await conn.fetch("select version, checksum from schema_migrations")}
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(f"migration {migration.version:03d}_{migration.name} was "
                                     "edited after it was applied; add a new file instead")
            continue
        async with conn.transaction():
            try:
                await conn.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:03d}_{migration.name} failed: {exc}") from exc
            await conn.execute(
                "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                migration.version, migration.name, migration.checksum)
        log.info("applied migration %03d_%s", migration.version, migration.name)
        done.append(migration)
    return done
