"""Second-factor challenges: the `mfa_token` a way in answers with instead of a session
(the contract's `{mfa_required, mfa_token, methods}`), in Redis only by its SHA-256.

A challenge holds what the sign-in needs to open the session once the code is proven: who,
by which way in, into which org, and what the way in changes once it is (an org joined,
an identity linked: archomata.identity.mfa.pending). It lives MFA_TOKEN_SECONDS, is
taken once (one script reads and deletes it), and dies at the MAX_WRONG_CODES-th wrong
code. Redis losing it costs a sign-in again, nothing more.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson
from redis.asyncio import Redis

from archomata.redis_boundary import redis_call

MFA_TOKEN_SECONDS = 300
MAX_WRONG_CODES = 5

# KEYS: the challenge. Returns its data, and deletes it.
_TAKE = """
local data = redis.call('HGET', KEYS[1], 'data')
redis.call('DEL', KEYS[1])
return data
"""
# KEYS: the challenge; ARGV: the wrong codes it may take. Returns the count, 0 if gone.
_WRONG = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local wrong = redis.call('HINCRBY', KEYS[1], 'wrong', 1)
if wrong >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return wrong
"""


def _key(token: str) -> str:
    return "mfa:" + hashlib.sha256(token.encode()).hexdigest()


class Challenges:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._take = redis.register_script(_TAKE)
        self._wrong = redis.register_script(_WRONG)

    async def open(self, data: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        with redis_call():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(_key(token), mapping={"data": orjson.dumps(data), "wrong": 0})
                pipe.expire(_key(token), MFA_TOKEN_SECONDS)
                await pipe.execute()
        return token

    async def peek(self, token: str) -> dict[str, Any] | None:
        with redis_call():
            raw = await self.redis.hget(_key(token), "data")
        return orjson.loads(raw) if raw else None

    async def wrong_code(self, token: str) -> int:
        """Counts a wrong code against the challenge, which ends at the limit."""
        with redis_call():
            return int(await self._wrong(keys=[_key(token)], args=[MAX_WRONG_CODES]))

    async def take(self, token: str) -> dict[str, Any] | None:
        """The challenge's data, once: None when it was taken, ended or never was."""
        with redis_call():
            raw = await self._take(keys=[_key(token)])
        return orjson.loads(raw) if raw else None
