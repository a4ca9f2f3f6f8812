"""PostgreSQL access: the pool, and the only doors to SQL.

Every org-scoped table has row-level security keyed on per-transaction settings
(`app.org_id`, `app.user_id`, `app.platform`). The doors below set them with
`set_config(..., true)` in the same round trip as BEGIN, so a pooled connection never
carries one request's scope into another's:

- `org_tx(request)`: the org of the verified token. The door handlers use.
- `platform_tx(request)`: every org, for a platform administrator's request.
- `user_tx_of(pool, user_id, org_id)`: the person of the verified token (and its org, if
  any), for their own rows on personal routes (/me...); `member_tx_of(pool, user_id,
  org_id)` the same person in another org of theirs, the membership checked by the door
  (switching org). A route opens them from the token alone, as `person(request).tx()`
  and `.into(org_id)` (archomata.access.caller).
- `signup_tx(pool)`: a new org of the server's making and nothing else, for the public
  routes that make accounts (registration, SSO sign-up).
- `service_tx(pool, org_id=..., user_id=...)`: for flows with no token yet (login,
  registration, refresh) where the scope comes from server-side state. Dangerous if fed
  a client-supplied id: only pass ids the server has itself resolved.

A change to who may do what raises the org's permission version in PostgreSQL
(`permission_versions`) in its own transaction, and Redis's copy just before the COMMIT:
the store function that writes the change says so (`tx.permissions_changed`), so no
handler can forget it, and a change whose version Redis cannot take is rolled back
(503) rather than committed unseen. Other work that must follow a commit and never a
rollback is scheduled on the `Tx` (`after_commit`).

Requests through `org_tx`, a person's and `platform_tx` (nearly all) wait for a connection in the
order they asked (the app's `DB_TURNS`); the rarer service and system doors do not queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg
import orjson
from aiohttp import web

from archomata import keys
from archomata.config import Config
from archomata.db_errors import DATABASE_GONE, client_error
from archomata.errors import Forbidden, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)


AfterCommit = Callable[[], Awaitable[None]]
# A door, ready to open: what a flow with more than one transaction is handed (a handler
# passes `functools.partial(org_tx, request)`, a test or the CLI a pool's door), so the
# flow never sees the request and cannot widen the scope it was given.
TxOpener = Callable[[], "AbstractAsyncContextManager[Tx]"]


class PermissionCache(Protocol):
    """What keeps cached permissions fresh (identity.revocation.Revocation)."""

    async def raise_versions(self, versions: Mapping[UUID, int]) -> None: ...


# The permission cache of each pool the app opened (registered by the app for its life):
# every door on that pool, the pool-only ones included, reaches it without being handed it.
# Whether this task holds a transaction. A second one opened inside it waits for a pooled
# connection while holding one: enough requests doing so at once hold the whole pool, and
# every one of them waits for the request deadline (seen: a password change, whose session
# revocation took a connection of its own, against logins waiting on its row lock).
_HOLDING: ContextVar[bool] = ContextVar("archomata_db_holding", default=False)


class NestedTransaction(RuntimeError):
    """A transaction opened inside another on the same task: a programming error (pass
    the open one down instead)."""


_PERMISSION_CACHES: dict[asyncpg.Pool, PermissionCache] = {}


@contextlib.contextmanager
def permission_cache(pool: asyncpg.Pool, cache: PermissionCache) -> Iterator[None]:
    """While open, a change to permissions made on `pool` raises `cache`'s versions."""
    previous = _PERMISSION_CACHES.get(pool)
    _PERMISSION_CACHES[pool] = cache
    try:
        yield
    finally:
        if previous is None:
            _PERMISSION_CACHES.pop(pool, None)
        else:
            _PERMISSION_CACHES[pool] = previous


_RAISE_VERSIONS = """
    insert into permission_versions (org_id, version)
    select org_id, 1 from unnest($1::uuid[]) as org_id order by org_id
    on conflict (org_id) do update set version = permission_versions.version + 1
    returning org_id, version
"""


class Tx:
    """An open transaction on one connection, with the scope it was opened with."""

    __slots__ = ("_after_commit", "_changed_orgs", "conn", "org_id", "platform", "user_id")

    def __init__(self, conn: asyncpg.Connection, org_id: UUID | None, user_id: UUID | None,
                 platform: bool) -> None:
        self.conn = conn
        self.org_id = org_id
        self.user_id = user_id
        self.platform = platform
        # Made on first use: nearly every transaction schedules nothing.
        self._after_commit: list[AfterCommit] | None = None
        self._changed_orgs: set[UUID] | None = None

    def after_commit(self, callback: AfterCommit) -> None:
        """Runs `callback` once this transaction has committed; never after a rollback.
        A failing callback is logged: the change it follows is committed all the same."""
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(callback)

    def permissions_changed(self, org_id: UUID) -> None:
        """Who may do what in `org_id` changes with this transaction: before it commits,
        the org's permission version goes up, here and in the cache, so every instance
        reloads its members' permissions (once per org, however many changes the
        transaction made)."""
        if self._changed_orgs is None:
            self._changed_orgs = set()
        self._changed_orgs.add(org_id)

    async def raise_permission_versions(self, cache: PermissionCache | None) -> None:
        """Just before COMMIT: the changed orgs' versions, one statement (rows locked, in
        a fixed order, until the commit), then the cache's copy. A cache that cannot take
        them fails the transaction: no change commits that a cache has not heard of."""
        if not self._changed_orgs:
            return
        found = await self.conn.fetch(_RAISE_VERSIONS, sorted(self._changed_orgs))
        if cache is not None:
            await cache.raise_versions({r["org_id"]: r["version"] for r in found})

    def committed_hooks(self) -> list[AfterCommit]:
        """What to run now that the transaction committed."""
        return list(self._after_commit or ())

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.conn.execute(sql, *args)
        return status

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, args)


def _raise_client_error(exc: BaseException) -> None:
    error = client_error(exc)
    if error is not None:
        raise error from exc


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=_json_text, decoder=orjson.loads,
                                  schema="pg_catalog")


def _json_text(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


async def _on_release(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing to send. asyncpg rolls back a transaction left open
    before calling it; its default reset would then send `RESET ALL; CLOSE ALL; UNLISTEN *;
    pg_advisory_unlock_all()`, one more round trip per request, to undo session state this
    service never creates on a pooled connection: every setting is transaction-local
    (`set_config(..., true)`, and each transaction sets all three), cursors live inside
    transactions, and nothing LISTENs or takes advisory locks there (migrations use a
    connection of their own)."""


async def create_pool(dsn: str, config: Config | None = None, **overrides: Any) -> asyncpg.Pool:
    options: dict[str, Any] = {
        "min_size": config.db_pool_min if config else 1,
        "max_size": config.db_pool_max if config else 4,
        "command_timeout": 30,
        "max_inactive_connection_lifetime": 300,
        "init": _init_connection,
        "reset": _on_release,
        "server_settings": {"application_name": "archomata"},
    }
    if config is not None and config.database_pooler == "pgbouncer":
        # Each transaction may land on another server connection: a statement prepared
        # on one is unknown on the next. Unnamed statements only (one more round trip
        # per query: PgBouncer's price).
        options["statement_cache_size"] = 0
    options.update(overrides)
    return await asyncpg.create_pool(dsn, **options)


def _begin_sql(org_id: UUID | None, user_id: UUID | None, platform: bool) -> str:
    # One simple-protocol round trip for BEGIN and every setting. The values are UUID
    # objects rendered by Python (never client text), so they cannot inject SQL.
    settings = [f"set_config('app.org_id', '{UUID(str(org_id)) if org_id else ''}', true)",
                f"set_config('app.user_id', '{UUID(str(user_id)) if user_id else ''}', true)",
                f"set_config('app.platform', '{'on' if platform else ''}', true)"]
    return f"BEGIN; SELECT {', '.join(settings)}"


@asynccontextmanager
async def _scoped_tx(pool: asyncpg.Pool, *, turns: asyncio.Semaphore | None = None,
                     org_id: UUID | None = None, user_id: UUID | None = None,
                     platform: bool = False) -> AsyncIterator[Tx]:
    """With `turns` (the app's, sized to the pool), requests get connections in the order
    they asked. asyncpg's own wait lets a newcomer take a connection just freed for the
    longest waiter, who then queues again at the back: under load a few requests waited
    seconds while most were served at once (measured: p99 2.4x a fair queue's)."""
    if _HOLDING.get():
        raise NestedTransaction("a transaction opened inside another: pass the open one")
    holding = _HOLDING.set(True)
    try:
        async with _connection_tx(pool, turns, org_id, user_id, platform) as tx:
            yield tx
    finally:
        _HOLDING.reset(holding)
    # Committed: the connection and the turn are back, the hooks hold neither.
    hooks = tx.committed_hooks()
    if hooks:
        # Shielded: a request cancelled now (its client gone, its deadline passed) is
        # committed all the same, and so must its hooks run.
        task = asyncio.ensure_future(_run_hooks(hooks))
        _RUNNING_HOOKS.add(task)
        task.add_done_callback(_RUNNING_HOOKS.discard)
        await asyncio.shield(task)


@asynccontextmanager
async def _connection_tx(pool: asyncpg.Pool, turns: asyncio.Semaphore | None,
                         org_id: UUID | None, user_id: UUID | None,
                         platform: bool) -> AsyncIterator[Tx]:
    # asyncio's Semaphore hands a freed turn to its first waiter, newcomers queue behind.
    async with turns if turns is not None else contextlib.nullcontext():
        try:
            conn = await pool.acquire()
        except DATABASE_GONE as exc:
            raise ServiceUnavailable("The database is unavailable.") from exc
        try:
            try:
                await conn.execute(_begin_sql(org_id, user_id, platform))
            except DATABASE_GONE as exc:
                raise ServiceUnavailable("The database is unavailable.") from exc
            tx = Tx(conn, org_id, user_id, platform)
            try:
                yield tx
                await tx.raise_permission_versions(_PERMISSION_CACHES.get(pool))
            except BaseException as exc:
                # A connection the database dropped (asyncpg may have taken it back
                # already) has nothing left to roll back.
                with contextlib.suppress(*DATABASE_GONE):
                    if not conn.is_closed():
                        await conn.execute("ROLLBACK")
                _raise_client_error(exc)
                raise
            try:
                await conn.execute("COMMIT")
            except Exception as exc:
                _raise_client_error(exc)
                raise
        finally:
            with contextlib.suppress(*DATABASE_GONE):  # one the pool took back already
                await pool.release(conn)


# The loop keeps only weak references to tasks: these hold the hooks' until they end.
_RUNNING_HOOKS: set[asyncio.Future[None]] = set()


async def _run_hooks(hooks: list[AfterCommit]) -> None:
    for hook in hooks:
        try:
            await hook()
        except Exception:
            # The change is committed; answering 5xx would tell the client otherwise.
            log.exception("an after-commit hook failed", extra={
                "hook": getattr(hook, "__qualname__", None) or type(hook).__name__})


def org_tx(request: web.Request) -> AbstractAsyncContextManager[Tx]:
    """The transaction for org-scoped SQL, scoped to the org of the verified token."""
    principal = request[keys.PRINCIPAL]
    if principal is None:
        raise Unauthorized("Authentication is required.")
    if principal.org_id is None:
        raise Forbidden("This action needs an organisation.", code="no_org")
    # The org alone: adding the user would widen the memberships policy with an OR that
    # the planner cannot serve from the org index (measured: 25% of the members list).
    return _scoped_tx(request.app[keys.DB_POOL], turns=request.app[keys.DB_TURNS],
                      org_id=principal.org_id)


def platform_tx(request: web.Request) -> AbstractAsyncContextManager[Tx]:
    """A transaction that sees every org: only for a platform administrator's request."""
    principal = request[keys.PRINCIPAL]
    if principal is None or not principal.is_platform_admin:
        raise Forbidden("Platform administrators only.")
    return _scoped_tx(request.app[keys.DB_POOL], turns=request.app[keys.DB_TURNS],
                      user_id=principal.user_id, platform=True)


def user_tx_of(pool: asyncpg.Pool, user_id: UUID, org_id: UUID | None, *,
               turns: asyncio.Semaphore | None = None) -> AbstractAsyncContextManager[Tx]:
    """The transaction for a person's own rows, scoped to the user and to their token's
    org when it has one (checked a member on this request).

    Dangerous: the ids must be the verified token's, as archomata.access.caller.person
    takes them; a route opens it as `person(request).tx()`.
    """
    return _scoped_tx(pool, turns=turns, org_id=org_id, user_id=user_id)


_IS_MEMBER = "select exists (select 1 from memberships where org_id = $1 and user_id = $2)"


@asynccontextmanager
async def member_tx_of(pool: asyncpg.Pool, user_id: UUID, org_id: UUID, *,
                       turns: asyncio.Semaphore | None = None) -> AsyncIterator[Tx]:
    """A person's transaction in one of their orgs, the membership checked inside it
    first (Forbidden `not_a_member` otherwise): fed an org id a client chose, it still
    opens onto no org of anyone else. `user_id` must be the verified token's: a route
    opens it as `person(request).into(org_id)` (archomata.access.caller)."""
    async with _scoped_tx(pool, turns=turns, org_id=org_id, user_id=user_id) as tx:
        if not await tx.fetchval(_IS_MEMBER, org_id, user_id):
            raise Forbidden("You are not a member of this organisation.", code="not_a_member")
        yield tx


def service_tx(pool: asyncpg.Pool, *, org_id: UUID | None = None,
               user_id: UUID | None = None) -> AbstractAsyncContextManager[Tx]:
    """A transaction for server-resolved scope (login, refresh, registration, mail links).

    Dangerous: `org_id` and `user_id` must come from the server's own records, never
    straight from a request.
    """
    return _scoped_tx(pool, org_id=org_id, user_id=user_id)


def signup_tx(pool: asyncpg.Pool) -> AbstractAsyncContextManager[Tx]:
    """A sign-up's transaction (registration, SSO sign-up, a new org from the command
    line): scoped to a fresh org id of the server's making, `tx.org_id`, which the new org
    is created with. It writes that org and its first member, and reads no other org's
    rows: nothing of anyone else is in reach of a public route that makes accounts."""
    return _scoped_tx(pool, org_id=uuid4())


def system_tx(pool: asyncpg.Pool) -> AbstractAsyncContextManager[Tx]:
    """A transaction that sees every org, for command-line tools and background jobs."""
    return _scoped_tx(pool, platform=True)
