"""Messages between service instances over one Redis pub/sub connection per instance.

    archomata:bridge:wake       an agent id: a command is waiting for it; wakes the long
                                polls of that agent on every instance
    archomata:apikey:revoked    a key id: drop it from the API-key cache at once

Both are hints that make things prompt, never what makes them correct: a long poll
claims once more when its wait ends, and a revoked key is also marked in Redis (see
archomata.bridge.api_keys), so a message lost while the connection was down costs
nothing but time. When the connection is (re)established every waiter is woken, since a
wake-up may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from archomata import redis_client
from archomata.redis_boundary import REDIS_FAILURES

log = logging.getLogger(__name__)

WAKE_CHANNEL = "archomata:bridge:wake"
KEY_REVOKED_CHANNEL = "archomata:apikey:revoked"
READ_SECONDS = 15.0
MAX_BACKOFF_SECONDS = 5.0
STOP_ATTEMPTS = 50
STOP_WAIT_SECONDS = 0.1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Broadcast:
    def __init__(self, redis: Redis, redis_url: str,
                 on_key_revoked: Callable[[str], None]) -> None:
        self.redis = redis  # publishes
        self._redis_url = redis_url  # the listener's own connection, see _listen
        self._on_key_revoked = on_key_revoked
        self._waiters: dict[UUID, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="archomata-broadcast")

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        # redis-py can swallow a cancellation that lands while it (re)connects, so ask
        # again until the listener has really stopped (bounded: shutdown must not hang).
        for _ in range(STOP_ATTEMPTS):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_SECONDS)
            if done:
                return
        log.warning("the pub/sub listener did not stop")

    def release_all(self) -> None:
        """Wakes every waiting long poll (the process stops: they answer at once)."""
        for waiting in self._waiters.values():
            for event in waiting:
                event.set()

    @contextlib.contextmanager
    def waiter(self, agent_id: UUID) -> Iterator[asyncio.Event]:
        """An event set whenever a command may be waiting for `agent_id`."""
        event = asyncio.Event()
        self._waiters.setdefault(agent_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(agent_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[agent_id]

    async def wake(self, agent_id: UUID) -> None:
        # Fail open: a lost wake-up only delays the command to the end of the long poll.
        try:
            await self.redis.publish(WAKE_CHANNEL, str(agent_id))
        except REDIS_FAILURES as exc:
            log.warning("could not publish a wake-up", extra={"error": type(exc).__name__})

    async def key_revoked(self, key_id: str) -> None:
        # The Redis marker set before this is what guarantees the refusal; this only
        # frees the other instances' cache entries sooner.
        try:
            await self.redis.publish(KEY_REVOKED_CHANNEL, key_id)
        except REDIS_FAILURES as exc:
            log.warning("could not publish a key revocation", extra={"error": type(exc).__name__})

    def _wake_local(self, agent_id: UUID | None) -> None:
        targets = (self._waiters.get(agent_id, set()) if agent_id is not None
                   else set().union(*self._waiters.values()))
        for event in targets:
            event.set()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = _text(message["type"]), _text(message["channel"])
        if kind == "subscribe":
            self.subscribed.set()
            self._wake_local(None)
        elif kind == "message" and channel == WAKE_CHANNEL:
            with contextlib.suppress(ValueError):
                self._wake_local(UUID(_text(message["data"])))
        elif kind == "message" and channel == KEY_REVOKED_CHANNEL:
            self._on_key_revoked(_text(message["data"]))

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            # A client of its own, remade on every reconnect: a pub/sub connection that
            # broke must never go back into the pool the requests use.
            client = redis_client.connect(self._redis_url, socket_connect_timeout=2,
                                          health_check_interval=READ_SECONDS)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(WAKE_CHANNEL, KEY_REVOKED_CHANNEL)
                    while True:
                        message = await pubsub.get_message(timeout=READ_SECONDS)
                        if message is not None:
                            backoff = 0.1
                            self._dispatch(message)
            except REDIS_FAILURES as exc:  # a background task: it waits the outage out
                self.subscribed.clear()
                log.warning("pub/sub connection lost; reconnecting",
                            extra={"error": type(exc).__name__})
            finally:
                await redis_client.close(client)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
