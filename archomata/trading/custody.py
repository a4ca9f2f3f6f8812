"""Who may put broker credentials within reach of an agent key (API.md, Trading).

GET /bridge/accounts hands an agent the plaintext credentials of every account assigned
to it, so whoever holds an agent's key holds those credentials. Three moves decide who
that is, and each needs the org administrator, whatever `agents:update` or
`accounts:update` allow (403 `permission_denied` otherwise):

- issuing a new key (rotation) for an agent that serves an account with credentials;
- pointing an account with credentials at an agent (`agent_id` on create or update);
- setting credentials on an account that has an agent;
- and, beyond the contract's list, changing where an assigned account's credentials are
  sent: its `server` or `broker`. The agent logs in wherever the account says with the
  stored password, so pointing it at a trade server of one's own would hand the
  password to whoever runs that server.

Moves that only take credentials out of reach (unassigning, clearing credentials,
deleting the account or the agent) need nothing more than their own permission.

Step-up (API.md §3) is asked on a wider rule, `changes_custody`: any change of who or
what the stored credentials reach, whoever is asking; it too is judged on the locked
rows, before the change is written.

The decision is made inside the transaction that makes the change, on rows it has
locked: the agent's row (FOR UPDATE by a rotation, FOR SHARE by an assignment) and the
account's. A rotation and an assignment to the same agent therefore run one after the
other, and the later one sees what the earlier one committed: a concurrent PATCH cannot
slip credentials under a rotation that checked a moment before. The administrator's own
membership row is read FOR SHARE too, so a demotion committed in between is seen (it
takes that row FOR UPDATE, archomata.orgs.store.members.lock_administrators).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from archomata.access import caller
from archomata.db import Tx
from archomata.errors import Forbidden
from archomata.orgs.store import members


@dataclass(frozen=True, slots=True)
class Holding:
    """What an account is, for this rule: the agent it is assigned to, whether it has
    credentials, and where the agent takes them (broker, server)."""

    agent_id: UUID | None
    has_credentials: bool
    destination: tuple[str, str]


def hands_over(before: Holding | None, after: Holding, credentials_set: bool) -> bool:
    """Whether a change from `before` (None: a new account) to `after` puts credentials
    within reach of an agent key, or of a server, that could not reach them.
    `credentials_set`: the change writes new credentials (a replacement counts: the agent
    gets what it did not have)."""
    if after.agent_id is None or not after.has_credentials:
        return False
    if credentials_set or before is None:
        return True
    return before.agent_id != after.agent_id or before.destination != after.destination


def changes_custody(before: Holding | None, after: Holding, credentials_named: bool) -> bool:
    """Whether a change moves custody of the account's credentials, which asks for a
    recent second factor (archomata.access.step_up): credentials set or cleared, another
    agent (or none), or another broker or server for credentials already stored."""
    if before is None:
        return after.agent_id is not None or after.has_credentials
    return (credentials_named or before.agent_id != after.agent_id
            or (before.has_credentials and before.destination != after.destination))


# The agent's row lock is this rule's, so it is written here, beside it: an assignment
# (trading/routes/accounts.py) and a rotation (bridge/agents_routes.py) both take it, and
# trading stands below the bridge (docs/architecture.md, the floors).
LOCK_FOR_KEY = "select 1 from agents where org_id = $1 and id = $2 for update"
LOCK_FOR_ASSIGNMENT = "select 1 from agents where org_id = $1 and id = $2 for share"


async def lock_agent(tx: Tx, org_id: UUID, agent_id: UUID, *, for_key: bool) -> bool:
    """Locks the agent's row until the transaction ends; False when there is no such agent.
    A key change (`for_key`) takes it exclusively, an account assignment shared, so the
    two never decide at once on what the other is changing (this module's rule)."""
    sql = LOCK_FOR_KEY if for_key else LOCK_FOR_ASSIGNMENT
    return await tx.fetchval(sql, org_id, agent_id) is not None


async def require_administrator(tx: Tx, acting: caller.Member, what: str) -> None:
    """403 `permission_denied` unless the caller is, in this transaction, an administrator
    of the org; call it after locking the rows the decision rests on."""
    if (acting.principal.is_org_admin
            and await members.lock_administrator(tx, acting.org_id, acting.user_id)):
        return
    raise Forbidden(f"{what} needs the organisation administrator: the agent's key "
                    "can fetch the account's broker credentials.")
