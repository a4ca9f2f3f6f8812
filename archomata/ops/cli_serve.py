"""`archomata serve`: the API, configured from ARCHOMATA_*."""

from __future__ import annotations

import asyncio
import logging

from archomata.config import Config
from archomata.http import server
from archomata.ops.workers import (
    Supervisor,
    is_worker,
    log_share,
    over_shared,
    parent_gone,
    this_worker,
    worker_config,
)

log = logging.getLogger(__name__)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional off Linux/macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve(config: Config, workers: int | None = None) -> int:
    """Serves until SIGTERM or SIGINT; with `workers`, that many processes on the port,
    minded by this one (archomata.ops.workers). The exit code."""
    if workers is not None and not is_worker():
        if over := over_shared(config, workers):
            log.warning("fewer than one per worker: each worker gets 1, the instance more "
                        "than the setting", extra={"workers": workers, "settings": over})
        return Supervisor(workers, config.shutdown_grace_seconds).run()
    from archomata.app import create_app

    if is_worker():
        whole, config = config, worker_config(config, this_worker())
        log_share(whole, config)

    # The role it connects as is checked at start-up (app.py): refused in production if
    # row-level security does not hold for it, a warning in development.
    _use_uvloop()
    # Not web.run_app: archomata.http.server holds the connection limits and TLS settings
    # that the tests start the service with too. A worker hands it the supervisor's
    # watch (the port shared with its siblings, a stop once the supervisor is gone).
    server.run(create_app(config), config,
               parent_gone=parent_gone if is_worker() else None)
    return 0
