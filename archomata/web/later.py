"""Work a request leaves for after its answer, so that neither the answer nor its timing
depends on it: the mails of the public /auth routes, and what registration, a reset
request and a resend do for an account (whether there is one must not show).

Tracked per app: a stopping process waits for what is under way (up to the shutdown
grace) before its pools close, rather than cutting a mail or a registration in half. A
failure is logged (its kind only: what failed may hold an address or a token) and never
raised: the answer is gone already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Later:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        """Starts `work` now, to run on after the response; `what` names it in the logs."""
        task = asyncio.create_task(self._guarded(work, what), name=f"later:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, Any], what: str) -> None:
        try:
            await work
        except Exception as exc:  # fail open: the answer went; the log tells the operator
            log.error("work after the answer failed",
                      extra={"what": what, "error": type(exc).__name__})

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, seconds: float) -> None:
        """Waits for the work under way (and what it starts meanwhile) for up to
        `seconds`, then cancels what is left, saying how much."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        if self._tasks:
            log.warning("work after the answer cut at shutdown",
                        extra={"tasks": len(self._tasks)})
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
