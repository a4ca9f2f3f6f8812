"""What a database error means to the client: the one translation, used by the
transaction doors (archomata.db) and by the few statements run outside them (the
sessions store's)."""

from __future__ import annotations

import logging

import asyncpg

from archomata.errors import ApiError, Conflict, ServiceUnavailable, ValidationFailed

log = logging.getLogger(__name__)


# The unique constraints a client can run into (a race past a handler's own check, a
# repeated value), with what they mean to the client. Any other is a plain 409 conflict.
UNIQUE_CONFLICTS: dict[str, tuple[str, str]] = {
    "accounts_agent_login_idx": ("login_taken",
                                 "The agent already has an account with this login."),
    "groups_org_id_name_key": ("group_name_taken", "A group with this name already exists."),
    "orders_client_id_idx": ("client_order_id_reused",
                             "This client_order_id was used for another order."),
    "strategies_org_id_name_key": ("name_taken", "A strategy with this name exists."),
    "users_email_normalized_key": ("email_taken", "An account with this email exists."),
}


# asyncpg's own refusal of an argument before it is sent (an int past int8, text it
# cannot encode): as much the client's doing as PostgreSQL's data errors.
_ArgumentError = asyncpg.exceptions._base.DataError


# The database going away under a connection (a restart, a failover, the network): a
# connection the pool hands out may be dead already, or die mid-transaction. A 503, like
# a connection that cannot be had, never a 500.
DATABASE_GONE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                 asyncpg.InternalClientError, asyncpg.AdminShutdownError,
                 asyncpg.CrashShutdownError, asyncpg.CannotConnectNowError)


def client_error(exc: BaseException) -> ApiError | None:
    """The client's error a database refusal stands for, or None for the server's own.

    The one translation of integrity and data errors: a unique violation is a 409 with
    the constraint's code, a foreign key one a 409 (what it named went away meanwhile),
    a check or data error (a value PostgreSQL refuses) a 422. None of them names the
    constraint, the table or the value to the client; the log has the constraint.
    """
    if isinstance(exc, DATABASE_GONE):
        return ServiceUnavailable("The database is unavailable.")
    constraint = getattr(exc, "constraint_name", None) or ""
    if isinstance(exc, asyncpg.UniqueViolationError):
        code, detail = UNIQUE_CONFLICTS.get(
            constraint, ("conflict", "This conflicts with an existing record."))
        return Conflict(detail, code=code)
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return Conflict("Something this refers to no longer exists.", code="conflict")
    if isinstance(exc, asyncpg.CheckViolationError | asyncpg.DataError | _ArgumentError):
        # Input the boundary should have refused: worth a line for whoever tightens it
        # (not the message: it can quote the value).
        log.warning("database refused a value", extra={
            "error": type(exc).__name__, "sqlstate": getattr(exc, "sqlstate", None),
            "constraint": constraint})
        return ValidationFailed("A value is not acceptable.",
                                errors={"_body": ["A value is not acceptable."]})
    return None
