"""Invitations die with their inviter's authority.

An invitation carries its inviter's authority (it can make someone an administrator), so
whatever takes that authority away ends their open invitations in the same transaction:
removal from the org and demotion from administrator (orgs/routes/org.py), a platform
administrator disabling the account (archomata.identity.user_admin, which create_app
hands revoke_of_disabled). Acceptance re-checks the
inviter inside its own transaction (store.invitations.accept) and ends an invitation
whose inviter it finds without that authority, for whatever reason.

Each ended invitation gets its own `member.invitation_revoked` entry (resource: the
invitation; details: address, org role, inviter and `reason`), written in one batch and
sharing the request id of the change that caused it, so that an invitation's history
is one query on its id.
"""

from __future__ import annotations

from dataclasses import replace
from uuid import UUID

from archomata import audit
from archomata.access.principal import ActorType
from archomata.audit import AuditAction, AuditContext
from archomata.db import Tx
from archomata.orgs.store import invitations
from archomata.orgs.store.invitations import Invitation, RevokeReason


async def audit_revoked(tx: Tx, who: AuditContext, revoked: list[Invitation],
                        reason: RevokeReason) -> None:
    await audit.record_each(tx, who, AuditAction.MEMBER_INVITATION_REVOKED, "invitation", [
        (i.org_id, i.id, {"email": i.email, "org_role": i.org_role.value,
                          "invited_by": str(i.invited_by) if i.invited_by else None,
                          "reason": reason.value})
        for i in revoked])


async def revoke_with_inviter(tx: Tx, who: AuditContext, org_id: UUID | None,
                              inviter_id: UUID, revoked_by: UUID | None,
                              reason: RevokeReason) -> list[Invitation]:
    """Ends and audits the inviter's open invitations to `org_id` (every org with None,
    in a platform transaction)."""
    revoked = await invitations.revoke_by_inviter(tx, org_id, inviter_id, revoked_by, reason)
    await audit_revoked(tx, who, revoked, reason)
    return revoked


async def revoke_of_disabled(tx: Tx, who: AuditContext, user_id: UUID,
                             admin_id: UUID) -> None:
    """Ends and audits every open invitation of an account a platform administrator
    disables, in every org (enabling it again does not bring them back)."""
    await revoke_with_inviter(tx, who, None, user_id, admin_id, RevokeReason.INVITER_DISABLED)


async def revoke_if_orphaned(tx: Tx, who: AuditContext, invitation: Invitation) -> bool:
    """Ends and audits the invitation when its inviter is no longer an administrator of
    its org. The system acts: whoever holds the token only found it so."""
    revoked = await invitations.revoke_orphaned(tx, invitation.org_id, invitation.id)
    if revoked is None:
        return False
    system = replace(who, actor_type=ActorType.SYSTEM, actor_id=None)
    await audit_revoked(tx, system, [revoked], RevokeReason.INVITER_NOT_ADMINISTRATOR)
    return True
