"""`archomata serve`: the API, configured from ARCHOMATA_*."""

from __future__ import annotations

import asyncio
import logging

from archomata import server
from archomata.config import Config

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
