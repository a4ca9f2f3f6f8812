"""Which Redis server the app's connections reach, checked on every new connection.

A Redis restarted from an older snapshot or AOF, or a replica promoted after its master
died, answers with the rebuilt marker (`rv:ready`) of before, but without the writes it
lost: a logout, a disabled user or org, a cut-off, a removed role. Each Redis process has
its own `run_id`, and the marker names the one it was rebuilt on (revocation.py writes it
in the script that sets it, so it names the server that holds the rebuilt state). A
connection that finds the marker naming another server than the one it reached, or
another server than this process last reached, deletes the marker there before its first
command is sent and marks the server stale (`rv:stale`), so the state is rebuilt from
PostgreSQL (revocation.py), ended families included, before any token is judged against
what that server holds.

The marker names a server process, not a moment: any restart is caught, so a snapshot
taken after a rebuild and before a later revocation is caught too, by a process that was
running then (which remembers the server) and by one that starts now (which has nothing
to remember, the reason the marker names its server). One script call per new
connection; none on the pooled connections of the steady state, and an authenticated
request still makes its one Redis call (the gate only asks whether the marker exists).
"""

from __future__ import annotations

import logging

from redis.asyncio.connection import AbstractConnection

log = logging.getLogger(__name__)

# The server's run_id, as `INFO server` gives it (scripts may call INFO).
RUN_ID_LUA = "string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''"

# KEYS: rv:ready, rv:stale. ARGV: the run_id this process last reached ('' = none yet).
# Returns {the server's run_id, the marker's when it named another server, or ''}.
CHECK = f"""
local run_id = {RUN_ID_LUA}
local mark = redis.call('GET', KEYS[1])
if (mark and mark ~= run_id) or (ARGV[1] ~= '' and ARGV[1] ~= run_id) then
    redis.call('INCR', KEYS[2])
    redis.call('DEL', KEYS[1])
    return {{run_id, mark or ARGV[1]}}
end
return {{run_id, ''}}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ServerWatch:
    """The server's identity as the app's Redis client last found it. `connected` is the
    client's `redis_connect_func`: the usual handshake, then the CHECK script."""

    def __init__(self, ready_key: str, stale_key: str) -> None:
        self.ready_key, self.stale_key = ready_key, stale_key
        self.run_id = ""  # none yet: the marker alone says whether the server changed

    async def connected(self, connection: AbstractConnection) -> None:
        await connection.on_connect()
        await connection.send_command("EVAL", CHECK, 2, self.ready_key, self.stale_key,
                                      self.run_id)
        run_id, previous = (_text(v) for v in await connection.read_response())
        if previous:
            # Another server than the state was rebuilt on, maybe without writes the last
            # one had: it is rebuilt first, and wholly (ended families are ended there too).
            log.warning("redis is another server than its revocation state was rebuilt on: "
                        "it is rebuilt", extra={"run_id": run_id, "previous_run_id": previous})
        self.run_id = run_id
