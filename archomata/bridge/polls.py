"""An agent's waiting long polls, counted across instances (API.md, Bridge: GET /commands).

An agent holds at most `MAX_WAITING` waiting polls, and an order wakes one of them:
without both, one agent's polls could each run a claim transaction on every order (150
polls and 10 orders made 1,766 transactions on the shared database).

    polls:{agent}   sorted set: token -> when the poll started waiting (ms)

A poll registers its token before it claims (so an order committed after its claim's
snapshot still finds it); registering a fifth takes the oldest out and tells its
instance to answer it with no commands (`drop`). A wake-up pops the newest token and
tells its instance to wake that poll alone (`wake`); the popped poll claims, and
registers again if it found nothing. Both messages go out on one pub/sub channel from
within the script, so no other instance can slip between the count and the message.
A token names its instance, so an instance ignores the others' tokens in one lookup.

Everything here is a hint for promptness and the database's sake, never what makes a
command reach its agent: a poll that is not woken still claims when its wait ends. So a
Redis that fails costs time, not commands: a poll that could not register waits for its
deadline (or a re-subscription, which wakes every local poll once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import UUID

from redis.asyncio import Redis

from archomata.redis_boundary import REDIS_FAILURES

log = logging.getLogger(__name__)

CHANNEL = "archomata:bridge:polls"
MAX_WAITING = 4
# A token older than this belongs to a poll that ended without saying so (an instance
# that died): the longest wait (30 s) and the long-poll timeout are well within it.
STALE_MS = 60_000
KEY_TTL_SECONDS = 120

# KEYS[1] polls:{agent}; ARGV token, now (ms), most waiting, stale before (ms), ttl (s),
# channel. Returns the tokens it dropped.
_REGISTER = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
local dropped = {}
if over > 0 then
  for _, token in ipairs(redis.call('ZRANGE', KEYS[1], 0, over)) do
    if #dropped < over and token ~= ARGV[1] then dropped[#dropped + 1] = token end
  end
  redis.call('ZREM', KEYS[1], unpack(dropped))
  for _, token in ipairs(dropped) do redis.call('PUBLISH', ARGV[6], 'drop ' .. token) end
end
return dropped
"""
# KEYS[1] polls:{agent}; ARGV channel. Pops the newest waiting poll and wakes it alone.
_WAKE_ONE = """
local newest = redis.call('ZPOPMAX', KEYS[1])
if newest[1] then redis.call('PUBLISH', ARGV[1], 'wake ' .. newest[1]) end
return newest[1]
"""


def _key(agent_id: UUID) -> str:
    return f"polls:{agent_id}"


@dataclass(eq=False, slots=True)
class Poll:
    """One waiting long poll of this instance."""

    agent_id: UUID
    token: str
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    registered: bool = False  # its token is in polls:{agent} (as far as it knows)
    superseded: bool = False  # a newer poll took its place: it answers no commands
    wake_pending: bool = False  # a wake-up chose it and it has not claimed since


class Polls:
    """This instance's waiting polls, and their shared count in Redis."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._register = redis.register_script(_REGISTER)
        self._wake_one = redis.register_script(_WAKE_ONE)
        self._prefix = uuid.uuid4().hex + "."
        self._numbers = itertools.count()
        self._local: dict[str, Poll] = {}

    @contextlib.contextmanager
    def waiting(self, agent_id: UUID) -> Iterator[Poll]:
        """A poll of `agent_id`, known here until the block ends (then call `leave`)."""
        poll = Poll(agent_id, f"{self._prefix}{next(self._numbers)}")
        self._local[poll.token] = poll
        try:
            yield poll
        finally:
            del self._local[poll.token]

    def agents_waiting(self) -> int:
        """The agents with a poll waiting here now (a superseded one gives up its place):
        an agent between two polls is away for the moment its commands take."""
        return len({poll.agent_id for poll in self._local.values() if not poll.superseded})

    async def register(self, poll: Poll) -> None:
        """Counts the poll among its agent's waiting ones, dropping the oldest beyond
        MAX_WAITING (this instance's at once, the others' through their listener)."""
        now = int(time.time() * 1000)
        # Marked before the call: a wake-up or a drop that arrives while it runs (its
        # token is in the set from the script on) must not be overwritten after it.
        poll.registered = True
        try:
            dropped = await self._register(keys=[_key(poll.agent_id)], args=[
                poll.token, now, MAX_WAITING, now - STALE_MS, KEY_TTL_SECONDS, CHANNEL])
        except REDIS_FAILURES as exc:  # fail open: the poll waits for its deadline
            poll.registered = False
            log.warning("could not register a long poll", extra={"error": type(exc).__name__})
            return
        for token in dropped:
            self.dropped(_text(token))

    async def leave(self, poll: Poll) -> None:
        if not poll.registered:
            return
        try:
            await self._redis.zrem(_key(poll.agent_id), poll.token)
        except REDIS_FAILURES as exc:  # its entry goes stale and is pruned
            log.warning("could not unregister a long poll", extra={"error": type(exc).__name__})

    async def wake_one(self, agent_id: UUID) -> None:
        # Fail open: a lost wake-up only delays the command to the end of a long poll.
        try:
            await self._wake_one(keys=[_key(agent_id)], args=[CHANNEL])
        except REDIS_FAILURES as exc:
            log.warning("could not wake a long poll", extra={"error": type(exc).__name__})

    def dropped(self, token: str) -> None:
        poll = self._local.get(token)
        if poll is not None:
            poll.registered, poll.superseded = False, True
            poll.woken.set()

    def woken(self, token: str) -> None:
        poll = self._local.get(token)
        if poll is not None:
            poll.registered, poll.wake_pending = False, True
            poll.woken.set()

    def wake_all(self) -> None:
        """Every local poll (a re-subscription: a wake-up may have been missed; or the
        process stops)."""
        for poll in self._local.values():
            poll.woken.set()

    def message(self, data: str) -> None:
        """A message of CHANNEL: `wake TOKEN` or `drop TOKEN`; others' tokens ignored."""
        kind, _, token = data.partition(" ")
        if not token.startswith(self._prefix):
            return
        if kind == "wake":
            self.woken(token)
        elif kind == "drop":
            self.dropped(token)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
