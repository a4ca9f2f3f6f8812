"""`archomata backup`, `backup verify` and `restore`: pg_dump of the database as the owner,
sealed on the way out (archomata/ops/backup_stream.py), authenticated whole before
pg_restore sees a byte of it.

    backup --output FILE|-   pg_dump --format=custom, sealed in chunks as it streams;
                             FILE is written beside itself and renamed once complete,
                             so a failed backup never leaves a file that looks whole
    backup verify --input F  every chunk authenticated, nothing restored
    restore --input FILE     the whole file authenticated first; then, into an EMPTY
                             database (refused otherwise), pg_restore in one transaction
                             fed the same chunks authenticated again as they are read

The key is ARCHOMATA_BACKUP_KEY (base64 of 32 bytes), never the data key. The owner
DSN's secrets (its password, in the netloc or its query, and an sslpassword) go to
pg_dump/pg_restore in their environment or a private service file, never on their
command line, where `ps` would show them (archomata.ops.database_urls.libpq_target); the
service's own ARCHOMATA_* settings are not passed on. Each refusal exits 1 with what is
wrong.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from archomata.config import ConfigError
from archomata.ops import backup_stream
from archomata.ops.backup_stream import BackupError
from archomata.ops.database_urls import database_urls, libpq_target

KEY_VARIABLE = "ARCHOMATA_BACKUP_KEY"


def backup_key(environ: Mapping[str, str]) -> bytes:
    text = environ.get(KEY_VARIABLE, "").strip()
    if not text:
        raise ConfigError(f"{KEY_VARIABLE} is required (base64 of 32 bytes)")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{KEY_VARIABLE} must be base64") from None
    if len(key) != backup_stream.KEY_BYTES:
        raise ConfigError(f"{KEY_VARIABLE} must decode to exactly 32 bytes")
    data_key = environ.get("ARCHOMATA_DATA_KEY", "").strip()
    if data_key and _same_key(data_key, key):
        raise ConfigError(f"{KEY_VARIABLE} must not be the data key: a backup's key is "
                          "kept apart from the secrets it protects")
    return key


def _same_key(text: str, key: bytes) -> bool:
    try:
        return base64.b64decode(text, validate=True) == key
    except (binascii.Error, ValueError):
        return False


def pg_tool(name: str, environ: Mapping[str, str]) -> str:
    """pg_dump / pg_restore: from ARCHOMATA_POSTGRES_BIN_DIR, else the installation the
    local servers run from, else PATH."""
    chosen = environ.get("ARCHOMATA_POSTGRES_BIN_DIR")
    candidates = [Path(chosen) / name] if chosen else []
    if not chosen:
        from archomata.ops.devservers import DevServerError, postgres_bin_dir

        with suppress(DevServerError):
            candidates.append(postgres_bin_dir() / name)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} not found: install PostgreSQL's client tools or set "
                          "ARCHOMATA_POSTGRES_BIN_DIR")
    return found


def backup(output: str, environ: Mapping[str, str] = os.environ) -> int:
    key = backup_key(environ)
    owner, _ = database_urls(dict(environ))
    dump_tool = pg_tool("pg_dump", environ)
    # stderr to a file, not a pipe: a full pipe nobody reads would stall pg_dump.
    with libpq_target(owner, environ) as (target, env), _output(output) as sink, \
            tempfile.TemporaryFile() as errors, subprocess.Popen(
                [dump_tool, "--format=custom", f"--dbname={target}"],
                stdout=subprocess.PIPE, stderr=errors, env=env) as dump:
        assert dump.stdout is not None

        def finished() -> None:
            if dump.wait() != 0:
                raise BackupError(f"pg_dump failed: {_text_of(errors)}")

        try:
            size = backup_stream.seal(key, dump.stdout.read, sink.write, finish=finished)
        except BaseException:
            dump.kill()
            raise
    print(f"backup written: {size} bytes of pg_dump sealed under key id "
          f"{backup_stream.key_id(key).hex()}", file=sys.stderr)
    return 0


def _text_of(errors: BinaryIO) -> str:
    errors.seek(0)
    return errors.read(4096).decode(errors="replace").strip()


@contextmanager
def _output(output: str) -> Iterator[BinaryIO]:
    if output == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    final = Path(output)
    partial = final.with_name(final.name + ".partial")
    try:
        with partial.open("wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


def verify(input_path: str, environ: Mapping[str, str] = os.environ) -> int:
    key = backup_key(environ)
    with _input(input_path) as source:
        size = backup_stream.verify(key, source)
    print(f"backup authenticated: {size} bytes of pg_dump, every chunk intact")
    return 0


@contextmanager
def _input(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        source = Path(path).open("rb")  # noqa: SIM115 (closed by the `with` below)
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    with source:
        yield source


def restore(input_path: str, environ: Mapping[str, str] = os.environ) -> int:
    key = backup_key(environ)
    if input_path == "-":
        raise BackupError("restore reads its file twice (authenticated whole first): "
                          "give a file, not standard input")
    with _input(input_path) as source:
        backup_stream.verify(key, source)
    owner, runtime = database_urls(dict(environ))
    asyncio.run(_prepare_empty(owner, runtime))
    restore_tool = pg_tool("pg_restore", environ)
    with libpq_target(owner, environ) as (target, env), tempfile.TemporaryFile() as errors, \
            subprocess.Popen([restore_tool, "--single-transaction", "--exit-on-error",
                              "--no-owner", f"--dbname={target}"],
                             stdin=subprocess.PIPE, stderr=errors, env=env) as restoring:
        assert restoring.stdin is not None
        try:
            with _input(input_path) as source:
                # Authenticated again as read: the file may have changed since the first
                # pass; a chunk that fails now ends pg_restore's one transaction unmade.
                for block in backup_stream.open_stream(key, source):
                    restoring.stdin.write(block)
            restoring.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit status and message say why
        except BaseException:
            restoring.kill()
            raise
        if restoring.wait() != 0:
            raise BackupError(f"pg_restore failed, nothing restored: {_text_of(errors)}")
    print("restored: run `archomata audit verify` to check the audit chains")
    return 0


_USER_RELATIONS = """
    select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname not in ('pg_catalog', 'information_schema')
      and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'
"""


async def _prepare_empty(owner: str, runtime: str) -> None:
    """Refuses a database that holds anything; makes the roles the dump grants to (roles
    are the cluster's, not the dump's), as `migrate` does."""
    import asyncpg

    from archomata.ops.migrations import ensure_roles

    conn = await asyncpg.connect(owner)
    try:
        if await conn.fetchval(_USER_RELATIONS):
            name = await conn.fetchval("select current_database()")
            raise BackupError(f"database {name!r} is not empty: restore only into an empty "
                              "database (create one, point ARCHOMATA_DATABASE_OWNER_URL at it)")
        await ensure_roles(conn, runtime)
    finally:
        await conn.close()
