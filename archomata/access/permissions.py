"""Permissions (`resource:action`) and the seven system roles, as the contract's §4 has them.

The migration seeds the same table; a test checks the two agree.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    ACCOUNTS_CREATE = "accounts:create"
    ACCOUNTS_DELETE = "accounts:delete"
    ACCOUNTS_READ = "accounts:read"
    ACCOUNTS_UPDATE = "accounts:update"
    AGENTS_CREATE = "agents:create"
    AGENTS_DELETE = "agents:delete"
    AGENTS_READ = "agents:read"
    AGENTS_UPDATE = "agents:update"
    AUDIT_LOGS_CREATE = "audit_logs:create"
    AUDIT_LOGS_DELETE = "audit_logs:delete"
    AUDIT_LOGS_READ = "audit_logs:read"
    AUDIT_LOGS_UPDATE = "audit_logs:update"
    DEALS_CREATE = "deals:create"
    DEALS_DELETE = "deals:delete"
    DEALS_READ = "deals:read"
    DEALS_UPDATE = "deals:update"
    GROUPS_CREATE = "groups:create"
    GROUPS_DELETE = "groups:delete"
    GROUPS_READ = "groups:read"
    GROUPS_UPDATE = "groups:update"
    MEMBERS_CREATE = "members:create"
    MEMBERS_DELETE = "members:delete"
    MEMBERS_READ = "members:read"
    MEMBERS_UPDATE = "members:update"
    ORDERS_CANCEL = "orders:cancel"
    ORDERS_CREATE = "orders:create"
    ORDERS_DELETE = "orders:delete"
    ORDERS_READ = "orders:read"
    ORDERS_UPDATE = "orders:update"
    ORG_CREATE = "org:create"
    ORG_DELETE = "org:delete"
    ORG_READ = "org:read"
    ORG_UPDATE = "org:update"
    POSITIONS_CREATE = "positions:create"
    POSITIONS_DELETE = "positions:delete"
    POSITIONS_READ = "positions:read"
    POSITIONS_UPDATE = "positions:update"
    RISK_LIMITS_CREATE = "risk_limits:create"
    RISK_LIMITS_DELETE = "risk_limits:delete"
    RISK_LIMITS_READ = "risk_limits:read"
    RISK_LIMITS_UPDATE = "risk_limits:update"
    ROLES_CREATE = "roles:create"
    ROLES_DELETE = "roles:delete"
    ROLES_READ = "roles:read"
    ROLES_UPDATE = "roles:update"
    STRATEGIES_CREATE = "strategies:create"
    STRATEGIES_DELETE = "strategies:delete"
    STRATEGIES_READ = "strategies:read"
    STRATEGIES_UPDATE = "strategies:update"


VIEWER = frozenset(Permission(f"{r}:read") for r in (
    "accounts", "positions", "deals", "orders", "risk_limits", "strategies", "agents"))

SYSTEM_ROLES: dict[str, frozenset[Permission]] = {
    "Viewer": VIEWER,
    "Trader": VIEWER | {Permission.ORDERS_CREATE, Permission.ORDERS_CANCEL},
    "Strategist": VIEWER | {Permission.STRATEGIES_CREATE, Permission.STRATEGIES_UPDATE,
                            Permission.STRATEGIES_DELETE},
    "Developer": VIEWER | {Permission.STRATEGIES_CREATE, Permission.STRATEGIES_UPDATE,
                           Permission.AGENTS_CREATE, Permission.AGENTS_UPDATE},
    "Operations": VIEWER | {Permission.ACCOUNTS_CREATE, Permission.ACCOUNTS_UPDATE,
                            Permission.ACCOUNTS_DELETE, Permission.AGENTS_CREATE,
                            Permission.AGENTS_UPDATE, Permission.AGENTS_DELETE},
    "Risk Manager": VIEWER | {Permission.RISK_LIMITS_UPDATE, Permission.ORDERS_CANCEL,
                              Permission.AUDIT_LOGS_READ},
    "Administrator": frozenset(Permission),
}
ADMINISTRATOR = "Administrator"
