"""The org rows' store: a change of require_mfa bumps the permission cache by itself (the
cache holds it beside every member's permissions), a rename does not."""

from __future__ import annotations

import asyncpg
import pytest

from archomata.db import permission_cache, system_tx
from archomata.tenancy import orgs
from tests.factories import tenant_account
from tests.test_after_commit import Recorder


@pytest.mark.parametrize(("name", "require_mfa", "bumps"), [
    (None, True, True),  # turned on
    ("Renamed", None, False),  # a name changes no one's permissions
    (None, False, False),  # already off: nothing moved
])
async def test_update_bumps_the_cache_only_when_require_mfa_moves(
        pool: asyncpg.Pool, name: str | None, require_mfa: bool | None, bumps: bool) -> None:
    account, recorder = await tenant_account(pool), Recorder()
    with permission_cache(pool, recorder):
        async with system_tx(pool) as tx:
            org = await orgs.update(tx, account.org.id, name, require_mfa)
    assert org is not None and org.require_mfa is bool(require_mfa)
    assert recorder.bumped == ([account.org.id] if bumps else [])


async def test_turning_it_off_again_bumps_too(pool: asyncpg.Pool) -> None:
    account, recorder = await tenant_account(pool), Recorder()
    async with system_tx(pool) as tx:
        await orgs.update(tx, account.org.id, None, True)
    with permission_cache(pool, recorder):
        async with system_tx(pool) as tx:
            await orgs.update(tx, account.org.id, None, False)
    assert recorder.bumped == [account.org.id]
