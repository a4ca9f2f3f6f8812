"""`archomata serve`: the API, configured from ARCHOMATA_*."""

from __future__ import annotations

import asyncio

from archomata.config import Config
from archomata.web import server


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: Config) -> None:
    from archomata.app import create_app

    # The role it connects as is checked at start-up (app.py): refused in production if
    # row-level security does not hold for it, a warning in development.
    _use_uvloop()
    # Not web.run_app: archomata.web.server holds the connection limits and TLS settings
    # that the tests start the service with too.
    server.run(create_app(config), config)
