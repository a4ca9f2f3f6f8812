"""Step-up: the dangerous writes ask for a recent second factor.

A route marked `@step_up` answers 403 `step_up_required` when the caller has a second
factor and their token's `mfa_at` is absent or older than
ARCHOMATA_STEP_UP_MAX_AGE_SECONDS; `POST /auth/step-up` mints one with a fresh `mfa_at`.
A route whose danger depends on its body declares `@step_up_when(...)` and calls
`require_step_up` itself when it applies. A caller with no second factor is not asked (they
have none to give).

A route that may change custody (who or what can reach an account's stored
credentials: API.md §3 "Step-up") declares `@step_up_custody` and decides from the rows
it has locked, inside its transaction and before it changes anything
(archomata.trading.custody.changes_custody): what the body names is not what it does.

Declared beside the guard, so create_app can refuse a dangerous route that declares
nothing (`problems`): every write of the platform administration, of an org's
administration (members, roles, invitations, groups, the org), of agents (their API
keys), of accounts (credentials, agent assignment) and of risk limits, and the second
factor's own settings, must say `@step_up`, `@step_up_when(reason)`,
`@step_up_custody` or `@step_up_exempt(reason)`. The routes the contract marks, and any
write that can change custody, may not be exempt (`REQUIRED`, `required_of`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web

from archomata import keys
from archomata.access import caller
from archomata.db import Tx
from archomata.errors import Forbidden

STEP_UP_ATTR = "__archomata_step_up__"
ALWAYS = "always"
CUSTODY = "custody"
WHEN = "when"
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
        await require_step_up(request)
        return await handler(request)
    _declare(stepped_up, ALWAYS)
    return stepped_up


def step_up_when(reason: str) -> Callable[[Handler], Handler]:
    """The route calls `require_step_up` itself when its body makes it dangerous (`reason`)."""
    def declare(handler: Handler) -> Handler:
        _declare(handler, f"{WHEN}: {reason}")
        return handler
    return declare


def step_up_custody(handler: Handler) -> Handler:
    """The route may change custody: it asks `stale` before its transaction and refuses
    with `step_up_refusal()` inside it, once the locked rows say custody changes."""
    _declare(handler, CUSTODY)
    return handler


def step_up_exempt(reason: str) -> Callable[[Handler], Handler]:
    """A write of a dangerous kind that asks for none, and why."""
    def declare(handler: Handler) -> Handler:
        _declare(handler, f"exempt: {reason}")
        return handler
    return declare


async def require_step_up(request: web.Request) -> None:
    """403 `step_up_required` unless the caller proved a second factor lately or has none."""
    if await step_up_is_stale(request):
        raise step_up_refusal()


async def step_up_is_stale(request: web.Request) -> bool:
    """Whether a step-up route would refuse this caller now: they have a second factor
    (or their org requires one) and proved none lately. One read at most, none for a
    fresh token; call it before opening a transaction (the read has its own)."""
    principal = caller.caller_if_any(request)
    if principal is None or principal.user_id is None:
        return False  # the route's guard refused these already
    max_age = request.app[keys.CONFIG].step_up_max_age_seconds
    if principal.mfa_at is not None and time.time() - principal.mfa_at <= max_age:
        return False
    return principal.org_requires_mfa or await _has_factor(request)


def step_up_refusal() -> Forbidden:
    return Forbidden("Confirm it is you with your second factor first "
                     "(POST /api/v1/auth/step-up).", code="step_up_required")


# Where a member of an org that requires a second factor still goes without one: to see
# who they are, to enrol, to sign in and out.
ENROLMENT_OPEN = ("/api/v1/me", "/api/v1/auth/")


async def refuse_unenrolled(request: web.Request) -> None:
    """403 `mfa_enrollment_required` for a member of an org that requires a second factor
    who has none, on the org's routes. A token whose session proved one passes at once;
    one that did not (an older session, the one that enrolled) costs one read."""
    principal = caller.caller_if_any(request)
    if (principal is None or not principal.org_requires_mfa or principal.mfa_at is not None
            or principal.user_id is None or request.path.startswith(ENROLMENT_OPEN)):
        return
    if await _has_factor(request):
        return
    raise Forbidden("This organisation requires a second factor: enrol one with "
                    "POST /api/v1/me/mfa/totp.", code="mfa_enrollment_required")


# Whether a person has a confirmed second factor, read in a transaction of theirs. The
# second factor is identity's (archomata.identity.store.mfa.enabled): archomata.app hands
# it in, so that access, below identity, does not import it.
FactorCheck = Callable[[Tx, UUID], Awaitable[bool]]
HAS_FACTOR: web.AppKey[FactorCheck] = web.AppKey("has_factor")


async def _has_factor(request: web.Request) -> bool:
    """Whether the caller, a person, has a confirmed second factor (one read, in their own
    scope)."""
    me = caller.person(request)
    async with me.tx() as tx:
        return await request.app[HAS_FACTOR](tx, me.user_id)


def dangerous(method: str, path: str, rule_kind: str | None,
              permission: str | None) -> bool:
    if method not in STATE_CHANGING:
        return False
    return (rule_kind in DANGEROUS_KINDS or permission in DANGEROUS_PERMISSIONS
            or path.startswith(DANGEROUS_PREFIXES))


def declaration(handler: Any) -> str | None:
    found: str | None = getattr(handler, STEP_UP_ATTR, None)
    return found


# The routes API.md §3 marks *step-up*, with what they must declare: ALWAYS, or CUSTODY
# for the two that ask only when custody changes, or WHEN (PATCH /org: `require_mfa`).
# Listed whether or not the app serves them yet, so a route added later under a marked
# path is held to it.
REQUIRED: dict[tuple[str, str], frozenset[str]] = {
    **{route: frozenset({ALWAYS}) for route in (
        ("POST", "/api/v1/agents"),
        ("POST", "/api/v1/agents/{agent_id}/rotate-key"),
        ("PUT", "/api/v1/accounts/{account_id}/risk-limits"),
        ("POST", "/api/v1/org/invitations"),
        ("DELETE", "/api/v1/me/mfa/totp"),
        ("POST", "/api/v1/me/mfa/recovery-codes"),
        ("DELETE", "/api/v1/me/passkeys/{passkey_id}"),
        ("PUT", "/api/v1/org/trading-halt"),
        ("DELETE", "/api/v1/org/trading-halt"),
        ("POST", "/api/v1/accounts/{account_id}/flatten"),
        ("POST", "/api/v1/accounts/{account_id}/risk-status/reset"))},
    ("POST", "/api/v1/accounts"): frozenset({ALWAYS, CUSTODY}),
    ("PATCH", "/api/v1/accounts/{account_id}"): frozenset({ALWAYS, CUSTODY}),
    ("PATCH", "/api/v1/org"): frozenset({ALWAYS, WHEN}),
    ("POST", "/api/v1/me/passkeys"): frozenset({ALWAYS, WHEN}),
}
# Writes that can change custody: an account's agent, credentials or destination, an
# agent's key. Their routes ask when custody changes, or always; never exempt.
CUSTODY_PERMISSIONS = frozenset({"accounts:create", "accounts:update",
                                 "agents:create", "agents:update"})
# Every write under these asks always: the members' (a stale administrator token can
# change or remove the other administrators) and the platform administration's.
ALWAYS_PREFIXES = (("/api/v1/org/members", STATE_CHANGING),
                   ("/api/v1/admin", frozenset({"POST", "PUT", "PATCH"})))


def required_of(method: str, path: str, permission: str | None) -> frozenset[str] | None:
    """What the contract requires the route to declare (None: anything, or nothing when
    it is not `dangerous`)."""
    if (method, path) in REQUIRED:
        return REQUIRED[(method, path)]
    for prefix, methods in ALWAYS_PREFIXES:
        if method in methods and (path == prefix or path.startswith(prefix + "/")):
            return frozenset({ALWAYS})
    if method in STATE_CHANGING and permission in CUSTODY_PERMISSIONS:
        return frozenset({ALWAYS, CUSTODY})
    return None


def problem(method: str, path: str, rule_kind: str | None, permission: str | None,
            declared: str | None) -> str | None:
    """Why create_app refuses the route's step-up declaration, or None."""
    required = required_of(method, path, permission)
    if required is not None:
        kind = None if declared is None else declared.split(":", 1)[0]
        if kind not in required:
            return (f"declares {declared or 'no step-up'}, where it must ask for one "
                    f"({' or '.join(sorted(required))})")
        return None
    if dangerous(method, path, rule_kind, permission) and declared is None:
        return ("a dangerous write that declares no step-up (@step_up, @step_up_when, "
                "@step_up_custody or @step_up_exempt)")
    return None
