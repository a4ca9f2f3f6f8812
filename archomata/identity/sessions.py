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
parent after the window, revokes the whole family, on whichever route presents it.

Every write to a session runs in the script that checks the session is still live, so a
revocation is never undone by a write racing it. The scripts that hand out a session also
return the issue instant of the access tokens minted from it, on the clock the user's
token cut-off is taken on (rv:user:{uid} `cut`, see revocation.py).
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

from archomata.config import Config
from archomata.redis_boundary import redis_call

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
    FOREIGN = "foreign"    # a live token of another family than the one asked for
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
    # The issue instant of access tokens minted from this view (see _INSTANT); 0 for a
    # view only read (a listing), which mints nothing.
    issued_us: int = 0


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

# The issue instant of access tokens minted from what a script wrote: Redis's clock in
# microseconds, raised to the user's cut-off when behind it, so a token minted after a cut
# always passes it and one minted before never does (the cut lies past every earlier
# instant), whatever the instances' clocks say.
_INSTANT = """
local function instant(uid)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    return math.max(now, tonumber(redis.call('HGET', 'rv:user:' .. uid, 'cut') or '0'))
end
"""

# ARGV: sid, user id, org id, now, ip, user agent, expires at, token hash, ttl.
_CREATE = _INSTANT + """
local skey = 'sess:' .. ARGV[1]
redis.call('HSET', skey, 'user_id', ARGV[2], 'org_id', ARGV[3], 'created_at', ARGV[4],
           'last_used_at', ARGV[4], 'ip', ARGV[5], 'user_agent', ARGV[6], 'expires_at', ARGV[7],
           'current', ARGV[8], 'parent', '', 'rotated_at', ARGV[4])
redis.call('SET', 'rt:' .. ARGV[8], ARGV[1], 'EX', ARGV[9])
redis.call('SADD', 'sessrt:' .. ARGV[1], ARGV[8])
redis.call('SADD', 'usess:' .. ARGV[2], ARGV[1])
for _, key in ipairs({skey, 'sessrt:' .. ARGV[1], 'usess:' .. ARGV[2]}) do
    redis.call('EXPIRE', key, ARGV[9])
end
return instant(ARGV[2])
"""

# A session is live while its hash holds `current`: every write below checks that in the
# script that writes, so a revocation between a check and a write cannot be undone by the
# write (an HSET on a deleted key would bring the session back, without a TTL).
# ARGV: hash, successor hash, now, grace, new org ('' = keep), ip, user agent,
# expected sid ('' = any).
_ROTATE = _REVOKE + _INSTANT + """
local sid = redis.call('GET', 'rt:' .. ARGV[1])
if not sid then return {'unknown'} end
local skey = 'sess:' .. sid
local s = redis.call('HMGET', skey, 'current', 'parent', 'rotated_at', 'expires_at', 'user_id')
local now = tonumber(ARGV[3])
if not s[1] then return {'revoked', sid} end
if tonumber(s[4]) <= now then revoke(sid) return {'revoked', sid} end
local outcome = 'same'
if ARGV[1] == s[1] then
    outcome = 'rotated'
elseif not (ARGV[1] == s[2] and s[1] == ARGV[2]
            and now - tonumber(s[3]) <= tonumber(ARGV[4])) then
    local owner = redis.call('HMGET', skey, 'user_id', 'org_id')
    revoke(sid)
    return {'reuse', sid, owner[1] or '', owner[2] or ''}
end
if ARGV[8] ~= '' and ARGV[8] ~= sid then return {'foreign', sid} end
if outcome == 'rotated' then
    local ttl = math.max(1, math.ceil(tonumber(s[4]) - now))
    redis.call('SET', 'rt:' .. ARGV[2], sid, 'EX', ttl)
    redis.call('SADD', 'sessrt:' .. sid, ARGV[2])
    redis.call('HSET', skey, 'current', ARGV[2], 'parent', ARGV[1], 'rotated_at', ARGV[3],
               'last_used_at', ARGV[3], 'ip', ARGV[6], 'user_agent', ARGV[7])
end
if ARGV[5] ~= '' then redis.call('HSET', skey, 'org_id', ARGV[5]) end
return {outcome, sid, instant(s[5]), redis.call('HGETALL', skey)}
"""

# ARGV: sid, org id, now.
_MOVE = _INSTANT + """
local skey = 'sess:' .. ARGV[1]
local s = redis.call('HMGET', skey, 'current', 'expires_at', 'user_id')
if not s[1] or tonumber(s[2]) <= tonumber(ARGV[3]) then return false end
redis.call('HSET', skey, 'org_id', ARGV[2])
return {instant(s[3]), redis.call('HGETALL', skey)}
"""

# Ends one family. ARGV: sid ('' = the one of the token), token hash ('' = none), its
# successor's hash, now, grace, owner user id ('' = anyone). Returns false when there was
# no such live session (of that owner), else {sid, user id, org id, stale}: stale when the
# token was neither the current one nor its parent inside the grace window, a reuse.
_END = _REVOKE + """
local sid = ARGV[1]
if sid == '' then sid = redis.call('GET', 'rt:' .. ARGV[2]) end
if not sid then return false end
local s = redis.call('HMGET', 'sess:' .. sid, 'user_id', 'org_id', 'current', 'parent',
                     'rotated_at')
if not s[3] or (ARGV[6] ~= '' and s[1] ~= ARGV[6]) then return false end
local stale = 0
if ARGV[2] ~= '' and redis.call('GET', 'rt:' .. ARGV[2]) == sid and ARGV[2] ~= s[3]
   and not (ARGV[2] == s[4] and s[3] == ARGV[3]
            and tonumber(ARGV[4]) - tonumber(s[5]) <= tonumber(ARGV[5])) then
    stale = 1
end
revoke(sid)
return {sid, s[1], s[2] or '', stale}
"""

# ARGV: user id, sid to keep ('' = none). Returns the revoked sids.
_REVOKE_USER = _REVOKE + """
local revoked = {}
for _, sid in ipairs(redis.call('SMEMBERS', 'usess:' .. ARGV[1])) do
    if sid ~= ARGV[2] then revoke(sid) table.insert(revoked, sid) end
end
return revoked
"""

# Access tokens of the user minted before now die: the cut lies one microsecond past both
# Redis's clock and the previous cut, so it is past every instant already handed out.
# ARGV: user id, '1' to end every session too. Returns the cut (µs).
_CUT = _REVOKE + """
local key = 'rv:user:' .. ARGV[1]
local t = redis.call('TIME')
local cut = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]),
                     tonumber(redis.call('HGET', key, 'cut') or '0')) + 1
redis.call('HSET', key, 'cut', string.format('%d', cut))
if ARGV[2] == '1' then
    for _, sid in ipairs(redis.call('SMEMBERS', 'usess:' .. ARGV[1])) do revoke(sid) end
end
return cut
"""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _session(sid: str, data: dict[bytes, bytes] | dict[str, str] | list[bytes],
             issued_us: int = 0) -> Session | None:
    if isinstance(data, list):  # a script's HGETALL: field, value, field, value...
        data = dict(zip(data[::2], data[1::2], strict=True))
    fields = {_text(k): _text(v) for k, v in data.items()}
    if not fields.get("user_id") or not fields.get("current"):
        return None
    return Session(UUID(sid), UUID(fields["user_id"]),
                   UUID(fields["org_id"]) if fields.get("org_id") else None,
                   float(fields["created_at"]), float(fields["last_used_at"]),
                   fields.get("ip", ""), fields.get("user_agent", ""),
                   float(fields["expires_at"]), issued_us)


@dataclass(frozen=True, slots=True)
class Ended:
    """A family `end` revoked: whose it was, and whether the token that named it was a
    replayed one (a reuse, to audit as such)."""

    session_id: UUID
    user_id: UUID
    org_id: UUID | None
    stale_token: bool


class SessionStore:
    def __init__(self, redis: Redis, config: Config) -> None:
        self.redis = redis
        self.ttl = config.refresh_token_ttl_seconds
        self.grace = config.refresh_reuse_grace_seconds
        self._successor_key = successor_key(config)
        self._create = redis.register_script(_CREATE)
        self._rotate = redis.register_script(_ROTATE)
        self._move = redis.register_script(_MOVE)
        self._end = redis.register_script(_END)
        self._revoke_user = redis.register_script(_REVOKE_USER)
        self._cut = redis.register_script(_CUT)

    async def create(self, user_id: UUID, org_id: UUID | None, ip: str,
                     user_agent: str) -> tuple[Session, str]:
        """A new family; returns it and its first refresh token."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = time.time()
        sid = uuid.uuid4()
        with redis_call():
            issued = await self._create(args=[
                str(sid), str(user_id), str(org_id) if org_id else "", repr(now), ip,
                user_agent[:256], repr(now + self.ttl), token_hash(token), self.ttl])
        return Session(sid, user_id, org_id, now, now, ip, user_agent[:256], now + self.ttl,
                       int(issued)), token

    async def rotate(self, token: str, ip: str, user_agent: str,
                     new_org: UUID | None = None, only: UUID | None = None) -> Rotation:
        """Rotates the family of `token` (moving it to `new_org`); with `only`, a token of
        another family is left alone (FOREIGN), unless it is a replay: a reuse revokes its
        family wherever it is presented."""
        successor = successor_of(self._successor_key, token)
        with redis_call():
            result = await self._rotate(args=[
                token_hash(token), token_hash(successor), repr(time.time()), self.grace,
                str(new_org) if new_org else "", ip, user_agent[:256],
                str(only) if only else ""])
        outcome = Outcome(_text(result[0]))
        if outcome is Outcome.REUSE:
            user, org = _text(result[2]), _text(result[3])
            return Rotation(outcome, revoked_session_id=UUID(_text(result[1])),
                            revoked_user_id=UUID(user) if user else None,
                            revoked_org_id=UUID(org) if org else None)
        if outcome not in (Outcome.ROTATED, Outcome.SAME):
            return Rotation(outcome)
        session = _session(_text(result[1]), result[3], int(result[2]))
        if session is None:
            return Rotation(Outcome.REVOKED)
        return Rotation(outcome, session, successor)

    async def move_to_org(self, sid: UUID, org_id: UUID) -> Session | None:
        """Points a live session at another org (no cookie to rotate at hand); None when
        the session is gone, which stays gone."""
        with redis_call():
            result = await self._move(args=[str(sid), str(org_id), repr(time.time())])
        return _session(str(sid), result[1], int(result[0])) if result else None

    async def list_for_user(self, user_id: UUID) -> list[Session]:
        with redis_call():
            sids = [_text(s) for s in await self.redis.smembers(f"usess:{user_id}")]
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in sids:
                    pipe.hgetall(f"sess:{sid}")
                rows = await pipe.execute()
        sessions = [_session(sid, row) for sid, row in zip(sids, rows, strict=True) if row]
        return sorted((s for s in sessions if s is not None), key=lambda s: -s.created_at)

    async def end(self, sid: UUID | None = None, *, token: str | None = None,
                  owner: UUID | None = None) -> Ended | None:
        """Revokes the family `sid` (or, without it, the one `token` belongs to), only
        if it is `owner`'s when given; None when there was no such live session."""
        digest = successor = ""
        if token is not None:
            digest = token_hash(token)
            successor = token_hash(successor_of(self._successor_key, token))
        with redis_call():
            result = await self._end(args=[
                str(sid) if sid else "", digest, successor, repr(time.time()), self.grace,
                str(owner) if owner else ""])
        if not result:
            return None
        org = _text(result[2])
        return Ended(UUID(_text(result[0])), UUID(_text(result[1])),
                     UUID(org) if org else None, bool(result[3]))

    async def revoke(self, sid: UUID) -> UUID | None:
        """Deletes the family; returns its user id (None if it was already gone)."""
        ended = await self.end(sid)
        return ended.user_id if ended else None

    async def revoke_user(self, user_id: UUID, keep: UUID | None = None) -> list[UUID]:
        with redis_call():
            sids = await self._revoke_user(args=[str(user_id), str(keep) if keep else ""])
        return [UUID(_text(s)) for s in sids]

    async def cut_off(self, user_id: UUID, *, end_sessions: bool) -> int:
        """Kills the user's access tokens minted so far (and, with `end_sessions`, every
        session), leaving those minted afterwards alive; returns the cut (µs, Redis's
        clock) for PostgreSQL to keep (users.set_tokens_valid_after)."""
        with redis_call():
            return int(await self._cut(args=[str(user_id), "1" if end_sessions else "0"]))
