"""MT5 bridge agents: their API keys (bcrypt-hashed) and what their heartbeats report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from archomata import rows
from archomata.db import Tx

ONLINE_SECONDS = 60


@dataclass(frozen=True)
class Agent:
    id: UUID
    name: str
    key_id: str
    version: str | None
    terminals: list[Any] | None
    last_seen_at: datetime | None
    online: bool
    created_at: datetime


@dataclass(frozen=True)
class KeyRecord:
    """What validating a key needs: the row its key id names."""

    agent_id: UUID
    org_id: UUID
    key_hash: str
    org_disabled: bool


COLUMNS = f"""id, name, key_id, version, terminals, last_seen_at,
              coalesce(last_seen_at > now() - interval '{ONLINE_SECONDS} seconds', false)
                  as online,
              created_at"""


def _agent(row: asyncpg.Record | None) -> Agent | None:
    return None if row is None else rows.from_record(Agent, row)


INSERT = f"""
    insert into agents (org_id, name, key_id, key_hash) values ($1, $2, $3, $4)
    returning {COLUMNS}
"""


async def insert(tx: Tx, org_id: UUID, name: str, key_id: str, key_hash: str) -> Agent:
    agent = _agent(await tx.fetchrow(INSERT, org_id, name, key_id, key_hash))
    assert agent is not None
    return agent


GET = f"select {COLUMNS} from agents where org_id = $1 and id = $2"


async def get(tx: Tx, org_id: UUID, agent_id: UUID) -> Agent | None:
    return _agent(await tx.fetchrow(GET, org_id, agent_id))


LIST_PAGE = f"""
    select {COLUMNS} from agents
    where org_id = $1 and ($2::timestamptz is null or (created_at, id) < ($2, $3))
    order by created_at desc, id desc
    limit $4
"""


async def list_page(tx: Tx, org_id: UUID, after: tuple[datetime, UUID] | None,
                    limit: int) -> list[Agent]:
    at, last_id = after if after else (None, None)
    return rows.from_records(Agent, await tx.fetch(LIST_PAGE, org_id, at, last_id, limit))


ROTATE_KEY = f"""
    with old as (select id, key_id from agents where org_id = $1 and id = $2 for update)
    update agents a set key_id = $3, key_hash = $4, updated_at = now()
    from old where a.id = old.id
    returning old.key_id as old_key_id, a.id, a.name, a.key_id, a.version,
              a.terminals, a.last_seen_at, a.created_at,
              coalesce(a.last_seen_at > now() - interval '{ONLINE_SECONDS} seconds', false)
                  as online
"""


async def rotate_key(tx: Tx, org_id: UUID, agent_id: UUID, key_id: str,
                     key_hash: str) -> tuple[str, Agent] | None:
    """Replaces the key; returns the old key id and the agent, or None when not found."""
    row = await tx.fetchrow(ROTATE_KEY, org_id, agent_id, key_id, key_hash)
    agent = _agent(row)
    return None if row is None or agent is None else (row["old_key_id"], agent)


DELETE = "delete from agents where org_id = $1 and id = $2 returning key_id"


async def delete(tx: Tx, org_id: UUID, agent_id: UUID) -> str | None:
    """Deletes the agent (its accounts become unassigned); returns its key id."""
    key_id: str | None = await tx.fetchval(DELETE, org_id, agent_id)
    return key_id


# Written at most every TOUCH_SECONDS unless something changed: heartbeats of one agent
# from several terminals or instances must not queue on its row lock, and "online" only
# needs to know the last minute.
TOUCH_SECONDS = 5
TOUCH = f"""
    update agents set last_seen_at = now(), version = $3, terminals = $4
    where org_id = $1 and id = $2
      and (last_seen_at is null or last_seen_at < now() - interval '{TOUCH_SECONDS} seconds'
           or version is distinct from $3 or terminals is distinct from $4::jsonb)
"""


async def touch(tx: Tx, org_id: UUID, agent_id: UUID, version: str,
                terminals: list[Any] | None) -> None:
    """Records a heartbeat: last seen now, this version and these terminals."""
    await tx.execute(TOUCH, org_id, agent_id, version, terminals)


# The one row a key id names, in whatever org: through the function of
# sql/009_agent_key_lookup.sql, so the transaction that asks sees no org at all.
FIND_KEY = "select id, org_id, key_hash, org_disabled from agent_key_record($1)"


async def find_key(tx: Tx, key_id: str) -> KeyRecord | None:
    """The agent a key id names, across orgs, from an unscoped transaction: only for
    validating a key (see api_keys)."""
    row = await tx.fetchrow(FIND_KEY, key_id)
    if row is None:
        return None
    return KeyRecord(row["id"], row["org_id"], row["key_hash"], row["org_disabled"])
