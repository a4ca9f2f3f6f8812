"""No secret the tests used may reach the audit log or a log line.

Factories remember every password, access and refresh token and mail token they hand
out (`remember`); conftest adds the configured secrets; API keys and JWTs are also known
by their shape. A handler on the root
logger formats each record as production does (archomata.logs.JsonFormatter) and keeps
its words; at the end of the run every audit_log row of every test database is read
too. A secret found as a whole word anywhere fails the run.

Words are runs of `[A-Za-z0-9_-]`, the alphabet of the secrets the tests make (a JWT
or a base64 key is remembered as its words), so the check is one set intersection, not
a substring search per secret: cheap enough for every test run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import asyncpg

from archomata.logs import JsonFormatter

SECRETS: set[str] = set()
MIN_LENGTH = 12  # shorter values are not secrets worth the false alarms
WORD = re.compile(r"[A-Za-z0-9_-]+")
AUDIT_TEXT = """
    select concat_ws(' ', actor_id, action, resource_type, resource_id, ip, user_agent,
                     request_id, details::text)
    from audit_log
"""


def remember(*values: str | None) -> None:
    """Marks values as secrets that must never be logged or audited: each of their words
    (a JWT's three segments, a base64 key's runs between `+`, `/` and `=`)."""
    for value in values:
        SECRETS.update(w for w in words(value or "") if len(w) >= MIN_LENGTH)


def words(text: str) -> set[str]:
    return set(WORD.findall(text))


# Secrets recognisable by their shape even if no factory remembered them: an agent API
# key, and a JWT (its first segment is base64 of '{"').
SHAPES = re.compile(r"amk_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{16,}")


def leaked(found: Iterable[str]) -> set[str]:
    found = set(found)
    return SECRETS.intersection(found) | {w for w in found if SHAPES.fullmatch(w)}


class LogWords(logging.Handler):
    """Keeps the words of every log line, formatted as the service writes them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.seen |= words(self.format(record))
        except Exception:  # a log line that cannot format is not this check's business
            self.handleError(record)


async def audit_log_words(dsn: str) -> set[str]:
    """The words of every audit entry of one database, read in chunks."""
    conn = await asyncpg.connect(dsn)
    found: set[str] = set()
    try:
        if not await conn.fetchval("select to_regclass('public.audit_log') is not null"):
            return found  # a database the tests left unmigrated
        async with conn.transaction():
            # The owner may be subject to row-level security: see every org.
            await conn.execute("select set_config('app.platform', 'on', true)")
            async for row in conn.cursor(AUDIT_TEXT, prefetch=5000):
                found |= words(row[0])
    finally:
        await conn.close()
    return found


def describe(where: str, secrets: set[str]) -> str:
    shown = ", ".join(sorted(s[:4] + "…" for s in secrets))
    return f"{len(secrets)} secret(s) the tests used appear in {where}: {shown}"
