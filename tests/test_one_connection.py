"""No request holds two pooled connections at once.

One that does waits for a second connection while holding the first: enough of them at
once hold the whole pool and each waits out the request deadline (CI saw it: a password
change revoked the other sessions on a connection of its own while sixteen logins, each
holding one, waited on its row lock). The door refuses a transaction opened inside another,
and on a pool of one connection the flows that end sessions inside a change still answer."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from typing import Any

import pytest

from archomata.app import create_app
from archomata.config import Config
from archomata.db import NestedTransaction, service_tx
from tests.factories import login, platform_admin, signed_up, strong_password, wait_for_mail
from tests.identity.test_auth import refresh


async def test_a_transaction_inside_another_is_refused_before_it_waits(pool: Any) -> None:
    # `pool` holds one connection: a nested door that waited for a second would hang.
    async with service_tx(pool) as tx:
        with pytest.raises(NestedTransaction):
            async with asyncio.timeout(5), service_tx(pool):
                pass
        assert await tx.fetchval("select 1") == 1  # the outer one is untouched
    async with service_tx(pool) as tx:  # and the door opens again once it is closed
        assert await tx.fetchval("select 2") == 2


async def test_transactions_on_other_tasks_are_not_nested(pool: Any) -> None:
    """The mark is the task's own: another request's transaction (a task of the server's,
    in a context of its own) only queues for the connection."""
    async with service_tx(pool) as tx:
        other = asyncio.get_running_loop().create_task(_select_one(pool),
                                                       context=contextvars.Context())
        await asyncio.sleep(0.05)
        assert not other.done()  # waiting for the one connection, not refused
        await tx.fetchval("select 1")
    assert await asyncio.wait_for(other, 5) == 1


async def _select_one(pool: Any) -> int:
    async with service_tx(pool) as tx:
        value: int = await tx.fetchval("select 1")
        return value


@pytest.fixture
async def narrow(aiohttp_client: Any, config: Config) -> Any:
    """The service on a pool of one connection, with a short deadline: a flow that needed a
    second connection would answer 504 (or 500, refused by the door), not what it should."""
    return await aiohttp_client(create_app(dataclasses.replace(
        config, db_pool_min=1, db_pool_max=1, request_timeout_seconds=5)))


class TestOnePooledConnectionIsEnough:
    async def test_a_password_change_ends_the_other_sessions(self, narrow: Any,
                                                            mail_sink: Any) -> None:
        me = await signed_up(narrow, mail_sink)
        other = await login(narrow, me.email, me.password)
        new_password = strong_password()
        changed = await narrow.post("/api/v1/auth/password/change", headers=me.auth, json={
            "current_password": me.password, "new_password": new_password})
        assert changed.status == 204, await changed.text()
        assert other.refresh is not None
        assert (await refresh(narrow, other.refresh)).status == 401
        assert (await narrow.get("/api/v1/me", headers=me.auth)).status == 200

    async def test_a_password_reset_ends_every_session(self, narrow: Any,
                                                      mail_sink: Any) -> None:
        me = await signed_up(narrow, mail_sink)
        await narrow.post("/api/v1/auth/password-reset/request", json={"email": me.email})
        token = await wait_for_mail(mail_sink, me.email, "reset")
        done = await narrow.post("/api/v1/auth/password-reset/confirm",
                                 json={"token": token, "new_password": strong_password()})
        assert done.status == 204, await done.text()
        assert me.refresh is not None
        assert (await refresh(narrow, me.refresh)).status == 401

    async def test_logout_all(self, narrow: Any, mail_sink: Any) -> None:
        me = await signed_up(narrow, mail_sink)
        done = await narrow.post("/api/v1/auth/logout-all", headers=me.auth)
        assert done.status == 204, await done.text()
        assert (await narrow.get("/api/v1/me", headers=me.auth)).status == 401

    async def test_an_administrator_disabling_and_promoting_a_user(
            self, narrow: Any, config: Config, mail_sink: Any) -> None:
        admin = await platform_admin(narrow, config)
        member = await signed_up(narrow, mail_sink)
        for change in ({"platform_role": "platform_administrator"}, {"disabled": True}):
            response = await narrow.patch(f"/api/v1/admin/users/{member.user_id}",
                                          headers=admin.auth, json=change)
            assert response.status == 200, await response.text()
        assert member.refresh is not None
        assert (await refresh(narrow, member.refresh)).status == 401

    async def test_the_sessions_rows_of_a_change_commit_with_it(
            self, narrow: Any, mail_sink: Any, owner_conn: Any) -> None:
        """Revoked in the change's own transaction: PostgreSQL's copy agrees with Redis."""
        me = await signed_up(narrow, mail_sink)
        other = await login(narrow, me.email, me.password)
        changed = await narrow.post("/api/v1/auth/password/change", headers=me.auth, json={
            "current_password": me.password, "new_password": strong_password()})
        assert changed.status == 204
        rows = await owner_conn.fetch(
            "select id, revoked_at is not null as revoked from sessions where user_id = $1",
            me.user_id)
        assert len(rows) == 2
        kept = {r["id"] for r in rows if not r["revoked"]}
        assert len(kept) == 1
        assert other.refresh is not None and (await refresh(narrow, other.refresh)).status == 401
