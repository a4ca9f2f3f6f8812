"""What a way in changes for someone with a second factor, held until the factor is proven.

Accepting an invitation joins an org; an SSO sign-in by email links an identity. For a
user with a second factor neither may happen before the challenge is answered, or an
abandoned challenge (a stolen password, a phished provider session) would leave the
change behind. So the way in keeps the change on the challenge (its stored record, in
Redis, server side: the client only holds the `mfa_token`) as a small record:

    {"kind": "join", "org_id", "invitation_id"}            archomata.orgs.service
    {"kind": "link", "org_id", "provider", "subject",      archomata.identity.linking
     "email"}

(A kind made above identity, the joining, is installed by create_app: identity imports
no package that stands on it.)

and /auth/mfa/verify makes it in the transaction that proves the factor (scoped to the
record's org: the invitation's, the user's home org for a link), with its audit entry
(`member.joined`, `auth.sso.linked`). It is checked again there, against what holds now:
an invitation used, revoked or expired meanwhile, or an identity linked to someone else,
refuses the answer (Refused, with the contract's error) and the proof rolls back with it.
For a user the sign-in would refuse by then (disabled, password changed), nothing is made:
the sign-in refuses the session right after, as it would have.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from uuid import UUID

from archomata.audit import AuditContext
from archomata.db import Tx, service_tx
from archomata.errors import ApiError
from archomata.identity import linking
from archomata.identity.reception import Reception
from archomata.identity.signin import still_let_in
from archomata.identity.store import users
from archomata.identity.store.users import User

# Makes a pending change of its kind (tx, who, the record, the user) in the transaction
# proving the factor (scoped to the record's org); an ApiError when it can no longer be.
Maker = Callable[[Tx, AuditContext, Mapping[str, Any], User], Awaitable[None]]


# The kinds made by a package above identity, as create_app installs them (the org an
# invitation joins: archomata.orgs.service.join_pending). A kind with no maker here is
# refused, never guessed at.
MAKERS: dict[str, Maker] = {}


def install(kind: str, maker: Maker) -> None:
    MAKERS[kind] = maker


class Refused(Exception):
    """The pending change can no longer be made: the challenge ends, `error` answers."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.code)
        self.error = error


class Effects:
    """A challenge's pending change (none for most), made once its factor is proven."""

    def __init__(self, reception: Reception, who: AuditContext,
                 challenge: Mapping[str, Any]) -> None:
        self.reception = reception
        self.who = who
        self.challenge = challenge
        self.record: Mapping[str, Any] | None = challenge.get("pending")
        self.user_id = UUID(challenge["user_id"])
        self.details: dict[str, Any] = {}  # what the change adds to the session's entry

    def opener(self) -> AbstractAsyncContextManager[Tx]:
        """The proving transaction: scoped to the change's org, so it can be made, else to
        the org the sign-in is opening, whose log takes its member's security events."""
        org_id = (self.record or {}).get("org_id") or self.challenge.get("opening")
        return service_tx(self.reception.pool, org_id=UUID(org_id) if org_id else None,
                          user_id=self.user_id)

    async def apply(self, tx: Tx) -> None:
        """Makes the change in `tx`, the transaction proving the factor; Refused (and `tx`
        rolls back) when it can no longer be made."""
        if self.record is None:
            return
        user = await users.get(tx, self.user_id, settled=True)
        if user is None or not still_let_in(self.challenge, user):
            return  # the sign-in refuses this session next: nothing changes for it
        maker = MAKERS.get(self.record["kind"])
        try:
            if self.record["kind"] == linking.LINK:
                self.details = await linking.link_pending(self.reception, tx, self.who,
                                                          self.record, user)
            elif maker is not None:
                await maker(tx, self.who, self.record, user)
            else:  # written by an older or newer release: make nothing rather than guess
                raise Refused(linking.sign_in_again())
        except ApiError as exc:
            raise Refused(exc) from exc

    def settled(self) -> dict[str, Any]:
        """The challenge as the session opens it: its entry names what the change made."""
        return {**self.challenge,
                "details": {**self.challenge["details"], **self.details}}
