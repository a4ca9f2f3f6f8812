"""The queue the agents lease their commands from (API.md, Bridge).

    command:  pending -> claimed (leased) -> done;  pending -> cancelled
              claimed, its lease run out with no result -> handed out again

An order puts its command in the queue, and a cancel withdraws it while still pending,
in the order's own statements (archomata.trading.store.orders: trading stands below the
bridge and never calls it). What the agents do with the queue is here.

A poll leases the commands it hands out (`lease_expires_at`); one with no result when its
lease runs out is handed out again, the same id with `attempt` + 1, and a result from any
attempt is taken once. Agents claim with `FOR UPDATE SKIP LOCKED`, so a command is with
one poll at a time however many agents or service instances poll; a cancel takes the same
row lock, so a command is either cancelled or handed out, never both. A command handed
out once is never withdrawn: its order may have reached the broker, which the agent finds
out by the order's `client_tag` (written into the MT5 order comment).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from archomata.db import Tx
from archomata.trading.store import orders
from archomata.trading.values import with_decimal_texts


@dataclass(frozen=True)
class Command:
    id: UUID
    attempt: int
    account_login: int
    type: str
    payload: dict[str, Any]
    lease_expires_at: datetime


CLAIM = """
    with claimable as (
        select c.id from commands c
        join accounts a on a.org_id = c.org_id and a.id = c.account_id
        where c.org_id = $1 and a.agent_id = $2 and a.deleted_at is null
          and (c.status = 'pending' or (c.status = 'claimed' and c.lease_expires_at <= now()))
        order by c.created_at, c.id
        limit $3
        for update of c skip locked
    ), claimed as (
        update commands c set status = 'claimed', claimed_by = $2, claimed_at = now(),
                              attempt = c.attempt + 1,
                              lease_expires_at = now() + make_interval(secs => $4)
        from claimable where c.id = claimable.id
        returning c.id, c.attempt, c.account_id, c.order_id, c.type, c.payload,
                  c.lease_expires_at, c.created_at
    ), sent as (
        update orders o set status = 'sent', updated_at = now()
        from claimed where o.org_id = $1 and o.id = claimed.order_id and o.status = 'pending'
    )
    select claimed.id, claimed.attempt, a.login as account_login, claimed.type,
           claimed.payload, claimed.lease_expires_at
    from claimed join accounts a on a.org_id = $1 and a.id = claimed.account_id
    order by claimed.created_at, claimed.id
"""


async def claim(tx: Tx, org_id: UUID, agent_id: UUID, limit: int,
                lease_seconds: float) -> list[Command]:
    """Leases the agent's oldest commands to it for `lease_seconds`: those never handed
    out, and those whose lease ran out with no result (the same id, attempt + 1)."""
    found = await tx.fetch(CLAIM, org_id, agent_id, limit, float(lease_seconds))
    return [Command(r["id"], r["attempt"], r["account_login"], r["type"], r["payload"],
                    r["lease_expires_at"]) for r in found]


# A result is taken only from the agent the account is assigned to now (API.md, Bridge):
# one it moved away from has no say on what its successor may be executing. Read, not
# locked: a move that commits first is seen (404), one that commits after comes after
# the result; and a result never waits for a state push, which holds the account row.
SERVES = """
    exists (select 1 from accounts a
            where a.org_id = $1 and a.id = c.account_id and a.agent_id = $3)
"""
COMPLETE = f"""
    update commands c set status = 'done', completed_at = now(), result = $4
    where c.org_id = $1 and c.id = $2 and c.claimed_by = $3 and c.status = 'claimed'
      and {SERVES}
    returning c.order_id
"""
COMMAND_STATE = f"""
    select c.status from commands c
    where c.org_id = $1 and c.id = $2 and c.claimed_by = $3 and {SERVES}
"""

@dataclass(frozen=True)
class Completion:
    found: bool  # the command exists, this agent claimed it and serves its account now
    order: orders.Order | None  # set when this call recorded the result


async def complete(tx: Tx, org_id: UUID, agent_id: UUID, command_id: UUID,
                   result: dict[str, Any]) -> Completion:
    """Records the agent's result of a command it was handed, from any attempt, once,
    while the agent still serves the command's account."""
    order_id = await tx.fetchval(COMPLETE, org_id, command_id, agent_id,
                                 with_decimal_texts(result))
    if order_id is None:
        state = await tx.fetchval(COMMAND_STATE, org_id, command_id, agent_id)
        return Completion(state is not None, None)
    return Completion(True, await orders.record_result(tx, org_id, order_id, result))


# The whole queue, every org (a platform transaction): what an operator's gauges show.
# Each branch's predicate is a partial index's (commands_pending_idx, commands_leased_idx):
# only the live rows are read however many done ones the table holds (`status in (...)`
# scans the table).
QUEUE = """
    with live as (
        select status, lease_expires_at, created_at from commands where status = 'pending'
        union all
        select status, lease_expires_at, created_at from commands where status = 'claimed'
    )
    select count(*) filter (where status = 'pending') as waiting,
           count(*) filter (where status = 'claimed' and lease_expires_at > now()) as leased,
           count(*) filter (where status = 'claimed' and lease_expires_at <= now())
               as expired,
           coalesce(extract(epoch from now() - min(created_at)
                                filter (where status = 'pending')), 0)::float8
               as oldest_waiting_seconds
    from live
"""


async def queue_figures(tx: Tx) -> dict[str, float]:
    """The commands waiting, leased and with their lease run out, and the age in seconds
    of the oldest waiting one (0 when none waits)."""
    row = await tx.fetchrow(QUEUE)
    assert row is not None
    return {name: float(row[name]) for name in
            ("waiting", "leased", "expired", "oldest_waiting_seconds")}
