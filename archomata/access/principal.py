"""The verified caller of a request, as authentication leaves it for the guards."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from archomata.tenancy.org_role import OrgRole


class PlatformRole(StrEnum):
    USER = "user"
    PLATFORM_ADMINISTRATOR = "platform_administrator"


class ActorType(StrEnum):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Principal:
    actor_type: ActorType
    actor_id: UUID
    org_id: UUID | None
    session_id: UUID | None = None
    platform_role: PlatformRole = PlatformRole.USER
    org_role: OrgRole | None = None
    permissions: frozenset[str] = field(default_factory=frozenset)
    mfa_at: int | None = None  # the token's: when its session's second factor was proven
    org_requires_mfa: bool = False  # the token's org asks its members for a second factor

    @property
    def user_id(self) -> UUID | None:
        return self.actor_id if self.actor_type is ActorType.USER else None

    @property
    def is_platform_admin(self) -> bool:
        return self.platform_role is PlatformRole.PLATFORM_ADMINISTRATOR

    @property
    def is_org_admin(self) -> bool:
        return self.org_role is OrgRole.ADMINISTRATOR
