"""After-commit hooks on the Tx: run once the COMMIT succeeded, never after a rollback;
and every store function that changes permissions schedules the permission-cache bump."""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib import import_module
from pkgutil import walk_packages
from types import ModuleType
from uuid import UUID

import asyncpg
import pytest

import archomata
from archomata.access import roles
from archomata.db import Tx, permission_cache, system_tx
from archomata.errors import Conflict, ServiceUnavailable
from archomata.identity.onboarding import NewAccount
from archomata.orgs.store import groups, members
from archomata.tenancy import orgs
from archomata.tenancy.org_role import OrgRole
from tests.factories import tenant_account


class Recorder:
    """A permission cache that remembers the orgs whose versions it was told to raise."""

    def __init__(self) -> None:
        self.bumped: list[UUID] = []
        self.versions: dict[UUID, int] = {}

    async def raise_versions(self, versions: Mapping[UUID, int]) -> None:
        self.bumped += sorted(versions)
        self.versions.update(versions)




class TestAfterCommit:
    async def test_hooks_run_in_order_once_committed_without_the_connection(
            self, pool: asyncpg.Pool) -> None:
        account = await tenant_account(pool)
        seen: list[str] = []

        async def read_back(label: str) -> None:
            async with system_tx(pool) as other:
                name = await other.fetchval("select name from orgs where id = $1",
                                            account.org.id)
            seen.append(f"{label}:{name}")

        async with system_tx(pool) as tx:
            await tx.execute("update orgs set name = 'Renamed' where id = $1", account.org.id)
            tx.after_commit(lambda: read_back("first"))
            tx.after_commit(lambda: read_back("second"))
            assert seen == []
        assert seen == ["first:Renamed", "second:Renamed"]

    async def test_a_rolled_back_transaction_runs_no_hook(self, pool: asyncpg.Pool) -> None:
        account, recorder, ran = await tenant_account(pool), Recorder(), []

        async def hook() -> None:
            ran.append(True)

        async def failing_handler() -> None:
            async with system_tx(pool) as tx:
                await roles.set_for_member(tx, account.org.id, account.user.id, [])
                tx.after_commit(hook)
                raise RuntimeError("the handler failed after the write")

        with permission_cache(pool, recorder), pytest.raises(RuntimeError):
            await failing_handler()
        assert ran == [] and recorder.bumped == []
        async with system_tx(pool) as tx:  # and the write was indeed undone
            assert await roles.of_member(tx, account.org.id, account.user.id) != []

    async def test_a_failed_commit_runs_no_hook_and_leaves_the_version(
            self, pool: asyncpg.Pool, owner_conn: asyncpg.Connection) -> None:
        recorder, ran, org_id = Recorder(), [], (await tenant_account(pool)).org.id

        async def hook() -> None:
            ran.append(True)

        async def refused_at_commit() -> None:
            async with system_tx(pool) as tx:
                # A deferred constraint: checked by the COMMIT itself, which then fails.
                await tx.execute("create temp table once (id int primary key "
                                 "deferrable initially deferred) on commit drop")
                await tx.execute("insert into once values (1), (1)")
                tx.permissions_changed(org_id)
                tx.after_commit(hook)

        before = await _version(owner_conn, org_id)
        with permission_cache(pool, recorder), pytest.raises(Conflict):
            await refused_at_commit()
        assert ran == []
        # The cache heard of a version that never committed: its entries reload once,
        # which costs a read; the reverse, a change it had not heard of, would be stale.
        assert recorder.bumped == [org_id]
        assert await _version(owner_conn, org_id) == before

    async def test_the_version_goes_up_in_the_transaction_and_the_cache_before_commit(
            self, pool: asyncpg.Pool, owner_conn: asyncpg.Connection) -> None:
        account = await tenant_account(pool)
        before = await _version(owner_conn, account.org.id)
        seen_by_others: list[int] = []

        class Watching(Recorder):
            async def raise_versions(self, versions: Mapping[UUID, int]) -> None:
                # Told before the COMMIT: another connection still sees the old version.
                seen_by_others.append(await _version(owner_conn, account.org.id))
                await super().raise_versions(versions)

        recorder = Watching()
        with permission_cache(pool, recorder):
            async with system_tx(pool) as tx:
                await roles.set_for_member(tx, account.org.id, account.user.id, [])
                await roles.assign_by_name(tx, account.org.id, account.user.id, "Viewer")
        assert recorder.versions == {account.org.id: before + 1}  # once for the two changes
        assert seen_by_others == [before]
        assert await _version(owner_conn, account.org.id) == before + 1

    async def test_a_cache_that_cannot_take_the_version_rolls_the_change_back(
            self, pool: asyncpg.Pool, owner_conn: asyncpg.Connection) -> None:
        account = await tenant_account(pool)
        before = await _version(owner_conn, account.org.id)

        class Down:
            async def raise_versions(self, versions: Mapping[UUID, int]) -> None:
                raise ServiceUnavailable("Redis is unavailable.")

        with permission_cache(pool, Down()), pytest.raises(ServiceUnavailable):
            async with system_tx(pool) as tx:
                await roles.set_for_member(tx, account.org.id, account.user.id, [])
        async with system_tx(pool) as tx:
            assert await roles.of_member(tx, account.org.id, account.user.id) != []
        assert await _version(owner_conn, account.org.id) == before

    async def test_a_failing_hook_is_logged_and_the_change_stays_committed(
            self, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
        account, ran = await tenant_account(pool), []

        async def broken() -> None:
            raise ConnectionError("the cache is down")

        async def after() -> None:
            ran.append(True)

        with caplog.at_level(logging.ERROR, logger="archomata.db"):
            async with system_tx(pool) as tx:
                await tx.execute("update orgs set name = 'Kept' where id = $1", account.org.id)
                tx.after_commit(broken)
                tx.after_commit(after)
        assert ran == [True]
        assert any("after-commit hook failed" in r.getMessage() for r in caplog.records)
        async with system_tx(pool) as tx:
            org = await orgs.get(tx, account.org.id)
        assert org is not None and org.name == "Kept"

    async def test_a_request_cancelled_after_the_commit_still_runs_its_hooks(
            self, pool: asyncpg.Pool) -> None:
        started, release, done = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def slow_hook() -> None:
            started.set()
            await release.wait()
            done.set()

        async def request() -> None:
            async with system_tx(pool) as tx:
                tx.after_commit(slow_hook)

        task = asyncio.ensure_future(request())
        await started.wait()
        task.cancel()  # the client went away, the deadline passed: the commit stands
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await asyncio.wait_for(done.wait(), 10)

    async def test_the_bump_goes_to_the_pools_cache_once_per_org(
            self, pool: asyncpg.Pool) -> None:
        first, second, recorder = await tenant_account(pool), await tenant_account(pool), Recorder()
        with permission_cache(pool, recorder):
            async with system_tx(pool) as tx:
                await roles.set_for_member(tx, first.org.id, first.user.id, [])
                await roles.assign_by_name(tx, first.org.id, first.user.id, "Viewer")
                await roles.set_for_member(tx, second.org.id, second.user.id, [])
        assert sorted(recorder.bumped) == sorted([first.org.id, second.org.id])
        async with system_tx(pool) as tx:  # no cache registered any more: nothing to bump
            await roles.set_for_member(tx, first.org.id, first.user.id, [])
        assert len(recorder.bumped) == 2


# Every store function that writes what the permission cache is loaded from
# (gate/authz.py LOAD_MEMBERSHIP), called as its callers do.
StoreCall = Callable[[Tx, NewAccount, UUID], Awaitable[object]]
WRITES: dict[str, StoreCall] = {
    "orgs.store.members.set_org_role": lambda tx, a, g: members.set_org_role(
        tx, a.org.id, a.user.id, OrgRole.MEMBER),
    "orgs.store.members.remove": lambda tx, a, g: members.remove(tx, a.org.id, a.user.id),
    "tenancy.orgs.add_member": lambda tx, a, g: orgs.add_member(
        tx, a.org.id, a.user.id, OrgRole.MEMBER),
    "access.roles.assign_by_name": lambda tx, a, g: roles.assign_by_name(
        tx, a.org.id, a.user.id, "Trader"),
    "access.roles.set_for_member": lambda tx, a, g: roles.set_for_member(
        tx, a.org.id, a.user.id, []),
    "orgs.store.groups.delete": lambda tx, a, g: groups.delete(tx, a.org.id, g),
    "orgs.store.groups.set_members": lambda tx, a, g: groups.set_members(
        tx, a.org.id, g, [a.user.id]),
    "orgs.store.groups.set_roles": lambda tx, a, g: groups.set_roles(tx, a.org.id, g, []),
    "orgs.store.groups.add_user_to": lambda tx, a, g: groups.add_user_to(
        tx, a.org.id, a.user.id, [g]),
}


@pytest.mark.parametrize("name", sorted(WRITES))
async def test_each_store_write_of_permissions_schedules_the_bump(
        pool: asyncpg.Pool, name: str) -> None:
    account, recorder = await tenant_account(pool), Recorder()
    async with system_tx(pool) as tx:
        group_id = await groups.insert(tx, account.org.id, "Desk", "")
    assert group_id is not None
    with permission_cache(pool, recorder):
        async with system_tx(pool) as tx:
            await WRITES[name](tx, account, group_id)
            assert recorder.bumped == []  # at the end of the transaction, once
    assert recorder.bumped == [account.org.id]


_PERMISSION_TABLES = re.compile(
    r"\b(insert\s+into|update|delete\s+from)\s+"
    r"(memberships|member_roles|group_members|group_roles|groups|roles|role_permissions)\b",
    re.IGNORECASE)
# A new empty group, a rename: no permission changes.
_NAME_ONLY = {"orgs.store.groups.insert", "orgs.store.groups.update"}


def _functions_writing_permissions(module: ModuleType) -> dict[str, bool]:
    """{module.function: whether it calls tx.permissions_changed} for each function that
    runs one of the module's SQL constants writing a table the cache is loaded from."""
    writing = {name for name, value in vars(module).items()
               if isinstance(value, str) and _PERMISSION_TABLES.search(value)}
    found: dict[str, bool] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.AsyncFunctionDef):
            continue
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if names & writing:
            calls = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            found[f"{module.__name__.removeprefix('archomata.')}.{node.name}"] = \
                "permissions_changed" in calls
    return found


def test_the_table_of_writes_is_every_store_function_writing_permissions() -> None:
    found: dict[str, bool] = {}
    # Every module of the package, not only store/: SQL that moves with its domain (or is
    # written outside a store module) is still found.
    for info in walk_packages(archomata.__path__, "archomata."):
        if not info.name.endswith("__main__"):
            found |= _functions_writing_permissions(import_module(info.name))
    assert set(found) - _NAME_ONLY == set(WRITES)
    assert [name for name, schedules in found.items()
            if not schedules and name not in _NAME_ONLY] == []


async def _version(owner_conn: asyncpg.Connection, org_id: UUID) -> int:
    await owner_conn.execute("select set_config('app.platform', 'on', false)")
    found: int = await owner_conn.fetchval(
        "select coalesce((select version from permission_versions where org_id = $1), 0)",
        org_id)
    return found
