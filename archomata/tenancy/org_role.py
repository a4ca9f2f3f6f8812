"""What a membership makes someone in its org: a module of its own, importing nothing, so
the caller's Principal (archomata.access.principal) carries it without importing the
store."""

from __future__ import annotations

from enum import StrEnum


class OrgRole(StrEnum):
    MEMBER = "member"
    ADMINISTRATOR = "administrator"
