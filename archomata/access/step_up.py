"""Step-up: the dangerous writes ask for a recent second factor.

A route marked `@step_up` answers 403 `step_up_required` when the caller has a second
factor and their token's `mfa_at` is absent or older than
ARCHOMATA_STEP_UP_MAX_AGE_SECONDS; `POST /auth/step-up` mints one with a fresh `mfa_at`.
A route whose danger depends on its body declares `@step_up_when(...)` and calls
`require` itself when it applies. A caller with no second factor is not asked (they
have none to give).

Declared beside the guard, so create_app can refuse a dangerous route that declares
nothing (`problems`): every write of the platform administration, of an org's
administration (members, roles, invitations, groups, the org), of agents (their API
keys), of accounts (credentials, agent assignment) and of risk limits, and the second
factor's own settings, must say `@step_up`, `@step_up_when(reason)` or
`@step_up_exempt(reason)`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import keys
from archomata.db import user_tx
from archomata.errors import Forbidden
from archomata.identity.store import mfa

STEP_UP_ATTR = "__archomata_step_up__"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Permissions whose writes hand out keys, credentials, access or limits.
DANGEROUS_PERMISSIONS = frozenset({"agents:create", "agents:update", "agents:delete",
                                   "accounts:create", "accounts:update", "accounts:delete",
                                   "risk_limits:update"})
DANGEROUS_KINDS = frozenset({"platform-admin", "org-admin"})
DANGEROUS_PREFIXES = ("/api/v1/me/mfa",)


def _declare(handler: Any, declaration: str) -> None:
    setattr(handler, STEP_UP_ATTR, declaration)


def step_up(handler: Handler) -> Handler:
    """The route asks for a recent second factor before it runs (below its guard)."""
    @functools.wraps(handler)
    async def stepped_up(request: web.Request) -> web.StreamResponse:
        await require(request)
        return await handler(request)
    _declare(stepped_up, "always")
    return stepped_up


def step_up_when(reason: str) -> Callable[[Handler], Handler]:
    """The route calls `require` itself when its body makes it dangerous (`reason`)."""
    def declare(handler: Handler) -> Handler:
        _declare(handler, f"when: {reason}")
        return handler
    return declare


def step_up_exempt(reason: str) -> Callable[[Handler], Handler]:
    """A write of a dangerous kind that asks for none, and why."""
    def declare(handler: Handler) -> Handler:
        _declare(handler, f"exempt: {reason}")
        return handler
    return declare


async def require(request: web.Request) -> None:
    """403 `step_up_required` unless the caller proved a second factor lately or has none."""
    principal = request[keys.PRINCIPAL]
    if principal is None or principal.user_id is None:
        return  # the route's guard refused these already
    max_age = request.app[keys.CONFIG].step_up_max_age_seconds
    if principal.mfa_at is not None and time.time() - principal.mfa_at <= max_age:
        return
    if not principal.org_requires_mfa and not await _has_factor(request, principal.user_id):
        return
    raise Forbidden("Confirm it is you with your second factor first (POST /auth/step-up).",
                    code="step_up_required")


# Where a member of an org that requires a second factor still goes without one: to see
# who they are, to enrol, to sign in and out.
ENROLMENT_OPEN = ("/api/v1/me", "/api/v1/auth/")


async def refuse_unenrolled(request: web.Request) -> None:
    """403 `mfa_enrollment_required` for a member of an org that requires a second factor
    who has none, on the org's routes. A token whose session proved one passes at once;
    one that did not (an older session, the one that enrolled) costs one read."""
    principal = request[keys.PRINCIPAL]
    if (principal is None or not principal.org_requires_mfa or principal.mfa_at is not None
            or principal.user_id is None or request.path.startswith(ENROLMENT_OPEN)):
        return
    if await _has_factor(request, principal.user_id):
        return
    raise Forbidden("This organisation requires a second factor: enrol one at /me/mfa.",
                    code="mfa_enrollment_required")


async def _has_factor(request: web.Request, user_id: UUID) -> bool:
    """Whether the caller has a confirmed second factor (one read, in their own scope)."""
    async with user_tx(request) as tx:
        return await mfa.enabled(tx, user_id)


def dangerous(method: str, path: str, rule_kind: str | None,
              permission: str | None) -> bool:
    if method not in STATE_CHANGING:
        return False
    return (rule_kind in DANGEROUS_KINDS or permission in DANGEROUS_PERMISSIONS
            or path.startswith(DANGEROUS_PREFIXES))


def declaration(handler: Any) -> str | None:
    found: str | None = getattr(handler, STEP_UP_ATTR, None)
    return found
