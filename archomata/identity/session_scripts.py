"""The Lua scripts of the sessions store (archomata.identity.sessions), which says what
each key holds, and the restore of families from PostgreSQL after Redis lost its data.
Each script runs atomically: a family is found, judged and changed in one step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from archomata.gate.ratelimit import SLIDING_WINDOW_FUNCTION
from archomata.identity.store.session_rows import Session

# Longer than any rebuild takes between reading PostgreSQL and writing Redis.
GONE_SECONDS = 900

REVOKE = """
local function revoke(sid)
    local skey = 'sess:' .. sid
    local uid = redis.call('HGET', skey, 'user_id')
    for _, h in ipairs(redis.call('SMEMBERS', 'sessrt:' .. sid)) do
        redis.call('DEL', 'rt:' .. h)
    end
    redis.call('DEL', skey, 'sessrt:' .. sid)
    if uid then redis.call('SREM', 'usess:' .. uid, sid) end
    -- A rebuild that read the family as live before this ran must not put it back.
    redis.call('SET', 'sessgone:' .. sid, 1, 'EX', GONE_SECONDS)
    return uid
end
""".replace("GONE_SECONDS", str(GONE_SECONDS))

# The issue instant of access tokens minted from what a script wrote: Redis's clock in
# microseconds, raised to the user's cut-off when behind it, so a token minted after a cut
# always passes it and one minted before never does (the cut lies past every earlier
# instant), whatever the instances' clocks say.
INSTANT = """
local function instant(uid)
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    return math.max(now, tonumber(redis.call('HGET', 'rv:user:' .. uid, 'cut') or '0'))
end
"""

# ARGV: sid, user id, org id, now, ip, user agent, expires at, token hash, ttl, amr,
# mfa at ('' = none).
CREATE = INSTANT + """
local skey = 'sess:' .. ARGV[1]
redis.call('HSET', skey, 'user_id', ARGV[2], 'org_id', ARGV[3], 'created_at', ARGV[4],
           'last_used_at', ARGV[4], 'ip', ARGV[5], 'user_agent', ARGV[6], 'expires_at', ARGV[7],
           'current', ARGV[8], 'parent', '', 'rotated_at', ARGV[4], 'amr', ARGV[10],
           'mfa_at', ARGV[11])
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
# A replay (an older token, or the parent after the grace window) is only reported: the
# family is ended in PostgreSQL first, then here (SessionStore.end), so that a retry
# finds it again if PostgreSQL could not be written.
# ARGV: hash, successor hash, now, grace, new org ('' = keep), ip, user agent,
# expected sid ('' = any), the rebuilt marker's key ('' = do not ask), the successor
# sealed under the presented token (`next`), the family's limit ('' = none) and window (ms).
ROTATE = REVOKE + INSTANT + SLIDING_WINDOW_FUNCTION + """
if ARGV[9] ~= '' and redis.call('EXISTS', ARGV[9]) == 0 then return {'unready'} end
local sid = redis.call('GET', 'rt:' .. ARGV[1])
if not sid then return {'unknown'} end
local skey = 'sess:' .. sid
local s = redis.call('HMGET', skey, 'current', 'parent', 'rotated_at', 'expires_at', 'user_id',
                     'org_id')
local now = tonumber(ARGV[3])
if not s[1] then return {'revoked', sid} end
if tonumber(s[4]) <= now then revoke(sid) return {'revoked', sid} end
local outcome = 'same'
if ARGV[1] == s[1] then
    outcome = 'rotated'
elseif not (ARGV[1] == s[2] and now - tonumber(s[3]) <= tonumber(ARGV[4])) then
    return {'reuse', sid, s[5] or '', s[6] or ''}
end
if ARGV[8] ~= '' and ARGV[8] ~= sid then return {'foreign', sid} end
if ARGV[11] ~= '' then
    local hit = sliding_window('rl:family:' .. sid, tonumber(ARGV[11]), tonumber(ARGV[12]))
    if hit[1] == 0 then return {'limited', sid, hit} end
end
if outcome == 'rotated' then
    local ttl = math.max(1, math.ceil(tonumber(s[4]) - now))
    redis.call('SET', 'rt:' .. ARGV[2], sid, 'EX', ttl)
    redis.call('SADD', 'sessrt:' .. sid, ARGV[2])
    redis.call('HSET', skey, 'current', ARGV[2], 'parent', ARGV[1], 'rotated_at', ARGV[3],
               'last_used_at', ARGV[3], 'ip', ARGV[6], 'user_agent', ARGV[7], 'next', ARGV[10])
end
if ARGV[5] ~= '' then redis.call('HSET', skey, 'org_id', ARGV[5]) end
return {outcome, sid, instant(s[5]), redis.call('HGETALL', skey)}
"""

# ARGV: sid, org id, now, the rebuilt marker's key ('' = do not ask), the family's limit
# ('' = none) and window (ms), as ROTATE.
MOVE = INSTANT + SLIDING_WINDOW_FUNCTION + """
if ARGV[4] ~= '' and redis.call('EXISTS', ARGV[4]) == 0 then return 'unready' end
local skey = 'sess:' .. ARGV[1]
local s = redis.call('HMGET', skey, 'current', 'expires_at', 'user_id')
if not s[1] or tonumber(s[2]) <= tonumber(ARGV[3]) then return false end
if ARGV[5] ~= '' then
    local hit = sliding_window('rl:family:' .. ARGV[1], tonumber(ARGV[5]), tonumber(ARGV[6]))
    if hit[1] == 0 then return {'limited', hit} end
end
redis.call('HSET', skey, 'org_id', ARGV[2])
return {instant(s[3]), redis.call('HGETALL', skey)}
"""

# A second factor proven on a live session (step-up): `mfa_at` renewed, the factor added
# to `amr`. ARGV: sid, factor, at, now.
PROVE = INSTANT + """
local skey = 'sess:' .. ARGV[1]
local s = redis.call('HMGET', skey, 'current', 'expires_at', 'user_id', 'amr')
if not s[1] or tonumber(s[2]) <= tonumber(ARGV[4]) then return false end
local amr = s[4] or 'pwd'
if not string.find(',' .. amr .. ',', ',' .. ARGV[2] .. ',', 1, true) then
    amr = amr .. ',' .. ARGV[2]
end
redis.call('HSET', skey, 'mfa_at', ARGV[3], 'amr', amr)
return {instant(s[3]), redis.call('HGETALL', skey)}
"""

# The second factor turned off: the session keeps how it was entered, not the factor.
# ARGV: sid.
FORGET = """
local skey = 'sess:' .. ARGV[1]
local amr = redis.call('HGET', skey, 'amr')
if not amr then return false end
local entered = string.match(amr, '^[^,]+') or 'pwd'
redis.call('HSET', skey, 'mfa_at', '', 'amr', entered)
return entered
"""

# Finds the live family to end, and changes nothing: it is ended in PostgreSQL first, then
# by END. ARGV: sid ('' = the one of the token), token hash ('' = none), now, grace,
# owner user id ('' = anyone), the rebuilt marker's key ('' = do not ask). Returns 'gone'
# for a family ended lately (so in PostgreSQL first), false when there is no such live
# session (of that owner), else {sid, user id, org id, stale}:
# stale when the token was neither the current one nor its parent inside the grace
# window, a reuse.
FIND = """
if ARGV[6] ~= '' and redis.call('EXISTS', ARGV[6]) == 0 then return 'unready' end
local sid = ARGV[1]
if sid == '' then sid = redis.call('GET', 'rt:' .. ARGV[2]) end
if not sid then return false end
local s = redis.call('HMGET', 'sess:' .. sid, 'user_id', 'org_id', 'current', 'parent',
                     'rotated_at')
if not s[3] and redis.call('EXISTS', 'sessgone:' .. sid) == 1 then return 'gone' end
if not s[3] or (ARGV[5] ~= '' and s[1] ~= ARGV[5]) then return false end
local stale = 0
if ARGV[2] ~= '' and redis.call('GET', 'rt:' .. ARGV[2]) == sid and ARGV[2] ~= s[3]
   and not (ARGV[2] == s[4] and tonumber(ARGV[3]) - tonumber(s[5]) <= tonumber(ARGV[4])) then
    stale = 1
end
return {sid, s[1], s[2] or '', stale}
"""

# Ends one family (already ended in PostgreSQL). ARGV: sid. Returns whether it was live.
END = REVOKE + """
local live = redis.call('HEXISTS', 'sess:' .. ARGV[1], 'current')
revoke(ARGV[1])
return live
"""

# ARGV: user id, sid to keep ('' = none). Returns the revoked sids.
REVOKE_USER = REVOKE + """
local revoked = {}
for _, sid in ipairs(redis.call('SMEMBERS', 'usess:' .. ARGV[1])) do
    if sid ~= ARGV[2] then revoke(sid) table.insert(revoked, sid) end
end
return revoked
"""

# Access tokens of the user minted before now die: the cut lies one microsecond past both
# Redis's clock and the previous cut, so it is past every instant already handed out.
# ARGV: user id, '1' to end every session too. Returns the cut (µs).
CUT = REVOKE + """
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


# A family from PostgreSQL, unless Redis holds it as rotated as late or later (written
# since it lost its data, or a rotation whose row is still being written), or ended it
# while the rebuild ran. Held older (a server that lost the latest rotation), it is
# written over. ARGV: sid, user id, org id, created, last used, ip, user agent,
# expires at, current hash, parent hash ('' = none), rotated at, ttl, amr, mfa at,
# sealed successor ('' = none).
RESTORE = """
local skey = 'sess:' .. ARGV[1]
if redis.call('EXISTS', 'sessgone:' .. ARGV[1]) == 1 then return 0 end
local held = redis.call('HGET', skey, 'rotated_at')
if held and tonumber(held) >= tonumber(ARGV[11]) then return 0 end
redis.call('HSET', skey, 'user_id', ARGV[2], 'org_id', ARGV[3], 'created_at', ARGV[4],
           'last_used_at', ARGV[5], 'ip', ARGV[6], 'user_agent', ARGV[7], 'expires_at', ARGV[8],
           'current', ARGV[9], 'parent', ARGV[10], 'rotated_at', ARGV[11], 'amr', ARGV[13],
           'mfa_at', ARGV[14], 'next', ARGV[15])
local hashes = {ARGV[9]}
if ARGV[10] ~= '' then table.insert(hashes, ARGV[10]) end
for _, h in ipairs(hashes) do
    redis.call('SET', 'rt:' .. h, ARGV[1], 'EX', ARGV[12])
    redis.call('SADD', 'sessrt:' .. ARGV[1], h)
end
redis.call('SADD', 'usess:' .. ARGV[2], ARGV[1])
redis.call('EXPIRE', skey, ARGV[12])
redis.call('EXPIRE', 'sessrt:' .. ARGV[1], ARGV[12])
if redis.call('TTL', 'usess:' .. ARGV[2]) < tonumber(ARGV[12]) then
    redis.call('EXPIRE', 'usess:' .. ARGV[2], ARGV[12])
end
return 1
"""


# Families PostgreSQL holds as ended that a server which lost writes may still hold.
# ARGV: their sids.
REVOKE_ALL = REVOKE + """
for _, sid in ipairs(ARGV) do revoke(sid) end
return #ARGV
"""


async def end_all(redis: Redis, client: Any, sids: Sequence[UUID]) -> None:
    """Queues the end of these families onto `client` (the rebuild's pipeline)."""
    script = redis.register_script(REVOKE_ALL)
    for start in range(0, len(sids), 500):
        await script(client=client, args=[str(sid) for sid in sids[start:start + 500]])


async def restore(redis: Redis, client: Any, found: Sequence[Session]) -> None:
    """Queues the families PostgreSQL holds as live onto `client` (the rebuild's
    pipeline). An ancestor older than a family's parent is not put back: presented after
    a rebuild it is refused as unknown rather than revoking its family."""
    script = redis.register_script(RESTORE)
    now = time.time()
    for row in found:
        await script(client=client, args=[
            str(row.id), str(row.user_id), str(row.org_id) if row.org_id else "",
            repr(row.created_at), repr(row.last_used_at), row.ip, row.user_agent,
            repr(row.expires_at), row.current_hash or "", row.parent_hash or "",
            repr(row.rotated_at), max(1, int(row.expires_at - now)), row.amr,
            repr(row.mfa_at) if row.mfa_at is not None else "", row.successor_sealed or ""])


