"""The Reception: what signing in, and every identity flow after it, works with. Named
apart from db.py's doors, which are transactions: a Reception opens none by itself."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from archomata.identity.login_throttle import LoginThrottle
from archomata.identity.passwords import PasswordHasher
from archomata.identity.sessions import SessionStore


@dataclass(frozen=True, slots=True)
class Reception:
    """What signing in works with: the pool its transactions open on, the sessions, the
    password hasher and the login backoff (identity/web.reception builds it from the
    app)."""

    pool: asyncpg.Pool
    sessions: SessionStore
    passwords: PasswordHasher
    throttle: LoginThrottle
