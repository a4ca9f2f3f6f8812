"""Messages between service instances over one Redis pub/sub connection per instance.

    archomata:bridge:polls      `wake TOKEN`: a command is waiting; wakes that one long
                                poll (the newest of its agent), on the instance that
                                holds it; `drop TOKEN`: a newer poll of the agent took its
                                place, it answers no commands (archomata.bridge.polls)
    archomata:apikey:revoked    a key id: drop it from the API-key cache at once

Both are hints that make things prompt, never what makes them correct: a long poll
claims once more when its wait ends, and a revoked key is also marked in Redis (see
archomata.bridge.api_keys), so a message lost while the connection was down costs
nothing but time. When the connection is (re)established every waiter is woken, since a
wake-up may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from archomata import redis_client
from archomata.bridge import polls
from archomata.redis_boundary import REDIS_FAILURES

log = logging.getLogger(__name__)

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
        self.polls = polls.Polls(redis)
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
        self.polls.wake_all()

    async def wake(self, agent_id: UUID) -> None:
        """A command is waiting for `agent_id`: one of its polls, wherever it waits,
        claims (none waiting: its next poll claims as it starts)."""
        await self.polls.wake_one(agent_id)

    async def key_revoked(self, key_id: str) -> None:
        # The Redis marker set before this is what guarantees the refusal; this only
        # frees the other instances' cache entries sooner.
        try:
            await self.redis.publish(KEY_REVOKED_CHANNEL, key_id)
        except REDIS_FAILURES as exc:
            log.warning("could not publish a key revocation", extra={"error": type(exc).__name__})

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = _text(message["type"]), _text(message["channel"])
        if kind == "subscribe":
            self.subscribed.set()
            self.polls.wake_all()  # a wake-up may have been missed while unsubscribed
        elif kind == "message" and channel == polls.CHANNEL:
            self.polls.message(_text(message["data"]))
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
                    await pubsub.subscribe(polls.CHANNEL, KEY_REVOKED_CHANNEL)
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
