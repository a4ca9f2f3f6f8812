"""The database URLs the commands connect with: ARCHOMATA_DATABASE_URL (the runtime
role) and ARCHOMATA_DATABASE_OWNER_URL (the schema owner; the runtime URL when unset)."""

from __future__ import annotations

import os

from archomata.config import ConfigError


def database_urls(environ: os._Environ[str] | dict[str, str]) -> tuple[str, str]:
    """(owner, runtime)."""
    runtime = environ.get("ARCHOMATA_DATABASE_URL", "").strip()
    if not runtime:
        raise ConfigError("ARCHOMATA_DATABASE_URL is required")
    owner = environ.get("ARCHOMATA_DATABASE_OWNER_URL", "").strip() or runtime
    return owner, runtime
