"""Sessions: refresh-token families kept in Redis, rotated atomically by one Lua script.

A session holds its user, current org, times, IP, user agent and absolute expiry, plus the
SHA-256 of its current refresh token and of that token's parent. Redis never sees a
token, only hashes:

    sess:{sid}     hash   user_id, org_id, created_at, last_used_at, ip, user_agent,
                          expires_at, current, parent, rotated_at
    rt:{sha256}    string the sid of the family the token belongs (or belonged) to
    sessrt:{sid}   set    every token hash of the family, to delete them with it
    usess:{uid}    set    the user's session ids

Rotation derives the successor from the presented token with HMAC (a key derived from
the data key), so tabs that present the same parent inside the grace window all receive
the same successor without Redis ever storing a token. Presenting an older token, or the
parent after the window, revokes the whole family.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis
from redis.exceptions import RedisError

from archomata.config import Config
from archomata.errors import ServiceUnavailable

TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def successor_key(config: Config) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"archomata.refresh.successor.v1").derive(config.data_key.reveal())


def successor_of(key: bytes, token: str) -> str:
    digest = hmac.new(key, token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Outcome(StrEnum):
    ROTATED = "rotated"
    SAME = "same"          # a parent inside the grace window: the current successor again
    REUSE = "reuse"        # an older token, or the parent too late: family revoked
    REVOKED = "revoked"    # the family is gone (logout, deleted, expired)
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Session:
    id: UUID
    user_id: UUID
    org_id: UUID | None
    created_at: float
    last_used_at: float
    ip: str
    user_agent: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: Outcome
    session: Session | None = None
    token: str | None = None
    # For a detected reuse: whose family was revoked, to audit it in the right org.
    revoked_user_id: UUID | None = None
    revoked_org_id: UUID | None = None
    revoked_session_id: UUID | None = None


_REVOKE = """
local function revoke(sid)
    local skey = 'sess:' .. sid
    local uid = redis.call('HGET', skey, 'user_id')
    for _, h in ipairs(redis.call('SMEMBERS', 'sessrt:' .. sid)) do
        redis.call('DEL', 'rt:' .. h)
    end
    redis.call('DEL', skey, 'sessrt:' .. sid)
    if uid then redis.call('SREM', 'usess:' .. uid, sid) end
    return uid
end
"""

# KEYS: none (single-node Redis). ARGV: hash, successor hash, now, grace, new org ('' = keep),
# ip, user agent.
_ROTATE = _REVOKE + """
local sid = redis.call('GET', 'rt:' .. ARGV[1])
if not sid then return {'unknown'} end
local skey = 'sess:' .. sid
local s = redis.call('HMGET', skey, 'current', 'parent', 'rotated_at', 'expires_at')
local now = tonumber(ARGV[3])
if not s[1] then return {'revoked', sid} end
if tonumber(s[4]) <= now then revoke(sid) return {'revoked', sid} end
if ARGV[1] == s[1] then
    local ttl = math.max(1, math.ceil(tonumber(s[4]) - now))
    redis.call('SET', 'rt:' .. ARGV[2], sid, 'EX', ttl)
    redis.call('SADD', 'sessrt:' .. sid, ARGV[2])
    redis.call('HSET', skey, 'current', ARGV[2], 'parent', ARGV[1], 'rotated_at', ARGV[3],
               'last_used_at', ARGV[3], 'ip', ARGV[6], 'user_agent', ARGV[7])
    if ARGV[5] ~= '' then redis.call('HSET', skey, 'org_id', ARGV[5]) end
    return {'rotated', sid}
end
if ARGV[1] == s[2] and s[1] == ARGV[2] and now - tonumber(s[3]) <= tonumber(ARGV[4]) then
    return {'same', sid}
end
local owner = redis.call('HMGET', skey, 'user_id', 'org_id')
revoke(sid)
return {'reuse', sid, owner[1] or '', owner[2] or ''}
"""

# ARGV: sid
_REVOKE_ONE = _REVOKE + "return revoke(ARGV[1])"

# ARGV: user id, sid to keep ('' = none). Returns the revoked sids.
_REVOKE_USER = _REVOKE + """
local revoked = {}
for _, sid in ipairs(redis.call('SMEMBERS', 'usess:' .. ARGV[1])) do
    if sid ~= ARGV[2] then revoke(sid) table.insert(revoked, sid) end
end
return revoked
"""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _session(sid: str, data: dict[bytes, bytes] | dict[str, str]) -> Session | None:
    fields = {_text(k): _text(v) for k, v in data.items()}
    if not fields.get("user_id"):
        return None
    return Session(UUID(sid), UUID(fields["user_id"]),
                   UUID(fields["org_id"]) if fields.get("org_id") else None,
                   float(fields["created_at"]), float(fields["last_used_at"]),
                   fields.get("ip", ""), fields.get("user_agent", ""),
                   float(fields["expires_at"]))


class SessionStore:
    def __init__(self, redis: Redis, config: Config) -> None:
        self.redis = redis
        self.ttl = config.refresh_token_ttl_seconds
        self.grace = config.refresh_reuse_grace_seconds
        self._successor_key = successor_key(config)
        self._rotate = redis.register_script(_ROTATE)
        self._revoke_one = redis.register_script(_REVOKE_ONE)
        self._revoke_user = redis.register_script(_REVOKE_USER)

    async def create(self, user_id: UUID, org_id: UUID | None, ip: str,
                     user_agent: str) -> tuple[Session, str]:
        """A new family; returns it and its first refresh token."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = time.time()
        session = Session(uuid.uuid4(), user_id, org_id, now, now, ip, user_agent[:256],
                          now + self.ttl)
        sid, digest = str(session.id), token_hash(token)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(f"sess:{sid}", mapping={
                    "user_id": str(user_id), "org_id": str(org_id) if org_id else "",
                    "created_at": now, "last_used_at": now, "ip": ip,
                    "user_agent": session.user_agent, "expires_at": session.expires_at,
                    "current": digest, "parent": "", "rotated_at": now})
                pipe.expire(f"sess:{sid}", self.ttl)
                pipe.set(f"rt:{digest}", sid, ex=self.ttl)
                pipe.sadd(f"sessrt:{sid}", digest)
                pipe.expire(f"sessrt:{sid}", self.ttl)
                pipe.sadd(f"usess:{user_id}", sid)
                pipe.expire(f"usess:{user_id}", self.ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc
        return session, token

    async def rotate(self, token: str, ip: str, user_agent: str,
                     new_org: UUID | None = None) -> Rotation:
        successor = successor_of(self._successor_key, token)
        try:
            result = await self._rotate(args=[
                token_hash(token), token_hash(successor), repr(time.time()), self.grace,
                str(new_org) if new_org else "", ip, user_agent[:256]])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc
        outcome = Outcome(_text(result[0]))
        if outcome is Outcome.REUSE:
            user, org = _text(result[2]), _text(result[3])
            return Rotation(outcome, revoked_session_id=UUID(_text(result[1])),
                            revoked_user_id=UUID(user) if user else None,
                            revoked_org_id=UUID(org) if org else None)
        if outcome not in (Outcome.ROTATED, Outcome.SAME):
            return Rotation(outcome)
        session = await self.get(UUID(_text(result[1])))
        if session is None:
            return Rotation(Outcome.REVOKED)
        return Rotation(outcome, session, successor)

    async def move_to_org(self, sid: UUID, org_id: UUID) -> None:
        """Points an existing session at another org (no cookie to rotate at hand)."""
        try:
            await self.redis.hset(f"sess:{sid}", "org_id", str(org_id))
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc

    async def get(self, sid: UUID) -> Session | None:
        try:
            data = await self.redis.hgetall(f"sess:{sid}")
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc
        return _session(str(sid), data) if data else None

    async def sid_of(self, token: str) -> UUID | None:
        value = await self.redis.get(f"rt:{token_hash(token)}")
        return UUID(_text(value)) if value else None

    async def list_for_user(self, user_id: UUID) -> list[Session]:
        sids = [_text(s) for s in await self.redis.smembers(f"usess:{user_id}")]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(f"sess:{sid}")
            rows = await pipe.execute()
        sessions = [_session(sid, row) for sid, row in zip(sids, rows, strict=True) if row]
        return sorted((s for s in sessions if s is not None), key=lambda s: -s.created_at)

    async def revoke(self, sid: UUID) -> UUID | None:
        """Deletes the family; returns its user id (None if it was already gone)."""
        try:
            uid = await self._revoke_one(args=[str(sid)])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc
        return UUID(_text(uid)) if uid else None

    async def revoke_user(self, user_id: UUID, keep: UUID | None = None) -> list[UUID]:
        try:
            sids = await self._revoke_user(args=[str(user_id), str(keep) if keep else ""])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("The session store is unavailable.") from exc
        return [UUID(_text(s)) for s in sids]
