"""The database URLs the commands connect with: ARCHOMATA_DATABASE_URL (the runtime
role) and ARCHOMATA_DATABASE_OWNER_URL (the schema owner; the runtime URL when unset),
and how a libpq program (pg_dump, pg_restore) is handed one without a secret on its
command line, where `ps` and /proc/<pid>/cmdline show it to every local user."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from archomata.config import ConfigError

# The libpq parameters that are secrets, as a URL's query may carry them. `passfile`,
# `sslkey`, `sslcert` and `sslrootcert` name files (their contents are the secrets, and
# stay in them); libpq reads no other secret from a connection string.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
# A service of our own for what no environment variable carries (libpq has PGPASSWORD,
# but nothing for sslpassword): a private service file, PGSERVICEFILE and PGSERVICE.
SERVICE = "archomata_secrets"
MEMORY_DIR = Path("/dev/shm")  # noqa: S108 (a private folder in it: off the disk when there)


def database_urls(environ: os._Environ[str] | dict[str, str]) -> tuple[str, str]:
    """(owner, runtime)."""
    runtime = environ.get("ARCHOMATA_DATABASE_URL", "").strip()
    if not runtime:
        raise ConfigError("ARCHOMATA_DATABASE_URL is required")
    owner = environ.get("ARCHOMATA_DATABASE_OWNER_URL", "").strip() or runtime
    return owner, runtime


def split_secrets(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN without any secret (the netloc's password, a `password` or `sslpassword`
    in its query, in any spelling of the name), and the secrets by parameter name. A
    secret in the query wins over the netloc's, as libpq has it."""
    parts = urlsplit(dsn)
    found: dict[str, str] = {}
    if parts.password is not None:
        found["password"] = unquote(parts.password)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{user}{host}{port}")
    kept = []
    for piece in parts.query.split("&") if parts.query else ():
        name, _, value = piece.partition("=")
        if unquote(name).strip().lower() in SECRET_PARAMETERS:
            # libpq decodes %XX only ('+' stays a plus), as unquote does.
            found[unquote(name).strip().lower()] = unquote(value)
        else:
            kept.append(piece)
    return urlunsplit(parts._replace(query="&".join(kept))), found


@contextmanager
def libpq_target(dsn: str, environ: Mapping[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """(the DSN to put on the command line, the environment to run the program with),
    for the life of the block: every secret of the DSN travels in the environment
    (PGPASSWORD) or in a private service file (sslpassword) that the block removes. The
    service's own settings (ARCHOMATA_*: keys, DSNs) are not passed on at all."""
    target, found = split_secrets(dsn)
    env = {k: v for k, v in environ.items() if not k.startswith("ARCHOMATA_")}
    if "password" in found:
        env["PGPASSWORD"] = found.pop("password")
    if not found:
        yield target, env
        return
    if env.get("PGSERVICE") or "service=" in urlsplit(target).query:
        raise ConfigError("the owner DSN's sslpassword cannot go beside a libpq service: "
                          "put it in that service's file")
    if any(value != value.strip() or "\n" in value or "\r" in value
           for value in found.values()):
        raise ConfigError("the owner DSN's sslpassword cannot begin or end with a space "
                          "or hold a line break (libpq's service file cannot carry it)")
    folder = tempfile.mkdtemp(prefix="archomata-libpq-",
                              dir=MEMORY_DIR if os.access(MEMORY_DIR, os.W_OK) else None)
    try:
        service_file = Path(folder) / "pg_service.conf"
        descriptor = os.open(service_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(f"[{SERVICE}]\n" + "".join(f"{k}={v}\n" for k, v in found.items()))
        yield target, {**env, "PGSERVICEFILE": str(service_file), "PGSERVICE": SERVICE}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
