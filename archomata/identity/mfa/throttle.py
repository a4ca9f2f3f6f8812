"""The account's own counter of second-factor answers, in Redis for every instance: what
stops a password holder (or a stolen access token) from guessing codes.

    throttle = SecondFactorThrottle(redis)
    await throttle.reserve(user_id)   # RateLimited (429, Retry-After) while it waits
    ...judge the answer...
    await throttle.proven(user_id)    # a right answer, and only that, clears the counter

Every way a second factor is answered goes through it: the sign-in challenge, step-up,
the enrolment's first code, and passkey assertions once they come (archomata.identity.mfa
.service). Each answer is *reserved* before it is judged, in one script, as the bridge
reserves an API key's tries before bcrypt (archomata.bridge.api_keys): a wait refuses it
unjudged, else it is counted at once, wrong or not. So no burst, from however many
addresses and challenges at once, gets more answers judged than the counter allows; a
right answer gives the account its FREE_ANSWERS back.

The contract's numbers: the FREE_ANSWERS-th answer counted imposes a wait of BASE_SECONDS
on the next, each further one doubles it, up to MAX_WAIT_SECONDS. The counter is
forgotten FORGET_SECONDS after the last answer's wait ends, so five wrong answers in a
quarter of an hour always reach the waits, and an attacker who sits out each wait keeps
doubling it. Nothing else clears it: not a right password, not a new challenge.

The bridge's script is not reused as is: its policy differs (a fixed window whose tries a
right key gives back one by one, and addresses the key was proven from that skip it),
while this counter doubles its waits and is cleared whole by a right answer.
"""

from __future__ import annotations

import contextlib
import math
from uuid import UUID

from redis.asyncio import Redis

from archomata.errors import RateLimited
from archomata.redis_boundary import REDIS_FAILURES, redis_call

FREE_ANSWERS = 5
BASE_SECONDS = 1
MAX_WAIT_SECONDS = 900
FORGET_SECONDS = 900

# KEYS: the answers counted, the wait. ARGV: free answers, base ms, max ms, forget ms.
# Returns {0, ms left} during a wait (nothing counted); else {1, the wait now imposed}.
RESERVE_ANSWER = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 then
  return {0, left}
end
local answers = redis.call('INCR', KEYS[1])
local over = answers - tonumber(ARGV[1])
local wait = 0
if over >= 0 then
  wait = math.floor(math.min(tonumber(ARGV[2]) * 2 ^ math.min(over, 30), tonumber(ARGV[3])))
  redis.call('SET', KEYS[2], 1, 'PX', wait)
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + wait)
return {1, wait}
"""


def _keys(user_id: UUID) -> list[str]:
    # One hash slot for both (a Redis Cluster runs the script on one node).
    return [f"mfa:answers:{{{user_id}}}", f"mfa:answers:{{{user_id}}}:wait"]


def _waiting(wait_ms: int) -> RateLimited:
    return RateLimited(math.ceil(max(wait_ms, 1) / 1000),
                       "Too many wrong second-factor answers; retry later.",
                       bucket="second_factor")


class SecondFactorThrottle:
    """The per-account counter of second-factor answers (see the module doc)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._reserve = redis.register_script(RESERVE_ANSWER)  # EVALSHA, reloaded if flushed

    async def reserve(self, user_id: UUID) -> None:
        """Counts one answer about to be judged, or refuses it (RateLimited with
        Retry-After) during a wait. Redis down: ServiceUnavailable, fail closed, since
        an answer judged uncounted is exactly the brute force this exists to stop."""
        with redis_call():
            reserved, wait_ms = await self._reserve(
                keys=_keys(user_id),
                args=[FREE_ANSWERS, BASE_SECONDS * 1000, MAX_WAIT_SECONDS * 1000,
                      FORGET_SECONDS * 1000])
        if not int(reserved):
            raise _waiting(int(wait_ms))

    async def proven(self, user_id: UUID) -> None:
        """A right answer: the account's counter and any wait are forgotten."""
        # The factor is proven and taken already: failing the request now would spend it
        # for nothing; a counter Redis keeps only makes the next wrong answers wait sooner.
        with contextlib.suppress(*REDIS_FAILURES):
            await self._redis.delete(*_keys(user_id))
