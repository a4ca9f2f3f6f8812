"""The audit log's hash chains: `audit verify` on a clean database, then on one a
superuser tampered with behind the application's back; per-org locking; anchors and
archiving; existing rows chained by the migration. Each test has a database of its own."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest

from archomata.access.principal import ActorType
from archomata.audit.actions import AuditAction
from archomata.audit.chain import NIL, Report, record_anchors, verify
from archomata.audit.context import AuditContext
from archomata.audit.service import record
from archomata.db import create_pool, service_tx
from archomata.identity.onboarding import create_user_with_org
from archomata.ops.devservers import DatabaseUrls, PostgresServer
from archomata.ops.migrations import migrate, sql_dir
from tests.conftest import make_database
from tests.factories import unique_email

ACTOR = AuditContext(ActorType.USER, UUID(int=7), ip="198.51.100.4", user_agent="chain test",
                     request_id="req-chain")
# The archive step exactly as docs/audit-retention.md tells operators to run it.
ARCHIVE = re.search(r"```sql\n\s*-- archive\n(.*?)```", (
    Path(__file__).resolve().parents[2] / "docs" / "audit-retention.md").read_text(),
    re.DOTALL)[1]  # type: ignore[index]
INSERT = "insert into audit_log (org_id, actor_type, action) values ($1, 'system', 'org.updated')"


async def populate(urls: DatabaseUrls, orgs: int, entries: int) -> list[UUID]:
    """`orgs` orgs with `entries` entries each, plus two entries without an org, written
    by the runtime role through audit.record."""
    pool = await create_pool(urls.runtime, min_size=1, max_size=2)
    try:
        ids = []
        for n in range(orgs):
            account = await create_user_with_org(
                pool, AuditContext.system(), email=unique_email("chain"), name="Chain",
                password_hash=None, org_name=f"Chain {n}", verified=True)
            async with service_tx(pool, org_id=account.org.id) as tx:
                for step in range(entries - 1):
                    await record(tx, ACTOR, AuditAction.ORG_UPDATED, resource_type="org",
                                 resource_id=account.org.id, details={"step": step, "é": "ü"})
            ids.append(account.org.id)
        async with service_tx(pool) as tx:
            for _ in range(2):
                await record(tx, ACTOR, AuditAction.AUTH_LOGIN_FAILED,
                             details={"reason": "unknown_email"})
        return ids
    finally:
        await pool.close()


async def entry_ids(owner: asyncpg.Connection, org_id: UUID) -> dict[int, UUID]:
    rows = await owner.fetch("select seq, id from audit_log where org_id = $1", org_id)
    return {r["seq"]: r["id"] for r in rows}


def cli(urls: DatabaseUrls, environ: dict[str, str],
        *args: str) -> subprocess.CompletedProcess[str]:
    env = {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
           "ARCHOMATA_DATABASE_OWNER_URL": urls.owner}
    return subprocess.run([sys.executable, "-m", "archomata", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
async def owner(request: pytest.FixtureRequest,
                postgres: PostgresServer) -> AsyncIterator[tuple[DatabaseUrls, asyncpg.Connection]]:
    urls = await make_database(postgres, f"chain_{request.node.name[5:40].lower()}")
    conn = await asyncpg.connect(urls.owner)
    yield urls, conn
    await conn.close()


class TestVerify:
    async def test_a_clean_database_verifies(self, owner: tuple[DatabaseUrls, asyncpg.Connection],
                                             environ: dict[str, str]) -> None:
        urls, conn = owner
        orgs = await populate(urls, orgs=2, entries=5)
        result = await asyncio.to_thread(cli, urls, environ, "verify")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip() == "audit verify: 3 chains, 12 entries checked, all intact"
        one = await asyncio.to_thread(cli, urls, environ, "verify", "--org", str(orgs[0]))
        assert one.stdout.strip() == "audit verify: 1 chain, 5 entries checked, all intact"
        rows = await conn.fetch("select seq from audit_log where org_id = $1 order by seq",
                                orgs[1])
        assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]

    async def test_edits_deletions_and_swaps_behind_the_apps_back_are_named(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str]) -> None:
        urls, conn = owner
        edited, deleted, swapped, rehashed, cut = await populate(urls, orgs=5, entries=8)
        before = {org: await entry_ids(conn, org) for org in (edited, deleted, swapped,
                                                               rehashed, cut)}
        # A superuser (or the owner) switching the append-only trigger off.
        await conn.execute("alter table audit_log disable trigger user")
        await conn.execute("update audit_log set details = '{\"step\": 99}' "
                           "where org_id = $1 and seq = 3", edited)
        await conn.execute("delete from audit_log where org_id = $1 and seq = 5", deleted)
        for old, new in ((4, -1), (5, 4), (-1, 5)):
            await conn.execute("update audit_log set seq = $3 where org_id = $1 and seq = $2",
                               swapped, old, new)
        for change in ("details = '{}'", "hash = audit_entry_hash(a)"):  # a careful forger
            await conn.execute(f"update audit_log a set {change} where org_id = $1 and seq = 2",
                               rehashed)
        await conn.execute("delete from audit_log where org_id = $1 and seq = 8", cut)
        await conn.execute("alter table audit_log enable trigger user")

        result = await asyncio.to_thread(cli, urls, environ, "verify")
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert f"BROKEN org {edited}: seq 3 (entry {before[edited][3]}): content does not " \
               "match its hash (edited)" in lines
        assert f"BROKEN org {deleted}: seq 5: entry seq 5 is missing (deleted?); the next " \
               f"entry present is seq 6, {before[deleted][6]}" in lines
        assert f"BROKEN org {swapped}: seq 4 (entry {before[swapped][5]}): does not link to " \
               "the entry before it (reordered, replaced or inserted out of band)" in lines
        assert f"BROKEN org {rehashed}: seq 3 (entry {before[rehashed][3]}): does not link " \
               "to the entry before it (reordered, replaced or inserted out of band)" in lines
        assert f"BROKEN org {cut}: seq 8: entry seq 8 is missing from the end (the chain " \
               "head says seq 8)" in lines
        assert lines[-1] == "audit verify: 6 chains, 20 entries checked, 5 broken"
        fine = await asyncio.to_thread(cli, urls, environ, "verify", "--org", "none")
        assert fine.returncode == 0, fine.stdout


class TestChainWrites:
    async def test_writers_of_one_org_take_turns_and_other_orgs_never_wait(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection]) -> None:
        urls, _ = owner
        first, second = await populate(urls, orgs=2, entries=1)
        holder, same, other = [await asyncpg.connect(urls.runtime) for _ in range(3)]
        try:
            hold = holder.transaction()
            await hold.start()
            await holder.execute("select set_config('app.org_id', $1, true)", str(first))
            await holder.execute(INSERT, first)
            async with other.transaction():
                await other.execute("select set_config('app.org_id', $1, true)", str(second))
                await other.execute("set local lock_timeout = '2s'")
                await other.execute(INSERT, second)  # another org: no wait
            waiting = same.transaction()
            await waiting.start()
            await same.execute("select set_config('app.org_id', $1, true)", str(first))
            await same.execute("set local lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await same.execute(INSERT, first)  # the same org: waits for the holder
            await waiting.rollback()
            await hold.commit()
        finally:
            for conn in (holder, same, other):
                await conn.close()
        report = await _verify(urls)
        assert report.breaks == []
        assert {w.chain_id: w.last_seq for w in report.chains}[first] == 2

    async def test_the_runtime_role_cannot_forge_chain_columns(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection]) -> None:
        urls, conn = owner
        (org,) = await populate(urls, orgs=1, entries=1)
        runtime = await asyncpg.connect(urls.runtime)
        try:
            async with runtime.transaction():
                await runtime.execute("select set_config('app.org_id', $1, true)", str(org))
                await runtime.execute(
                    "insert into audit_log (org_id, actor_type, action, seq, prev_hash, hash, "
                    "occurred_at) values ($1, 'system', 'org.updated', 99, $2, $2, "
                    "'2000-01-01')", org, bytes(32))
            for table in ("audit_chain_heads", "audit_anchors"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await runtime.fetch(f"select * from {table}")
        finally:
            await runtime.close()
        row = await conn.fetchrow("select seq, occurred_at from audit_log where org_id = $1 "
                                  "order by seq desc limit 1", org)
        assert row["seq"] == 2
        assert row["occurred_at"].year > 2000
        assert (await _verify(urls)).breaks == []


async def _verify(urls: DatabaseUrls, org_id: UUID | None = None) -> Report:
    conn = await asyncpg.connect(urls.owner)
    try:
        return await verify(conn, org_id)
    finally:
        await conn.close()


class TestArchiving:
    async def test_verification_resumes_from_an_anchor_after_old_entries_are_archived(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection]) -> None:
        urls, conn = owner
        kept, emptied = await populate(urls, orgs=2, entries=10)
        sixth = await conn.fetchval("select occurred_at from audit_log where org_id = $1 "
                                    "and seq = 6", kept)
        last = await conn.fetchval("select max(occurred_at) from audit_log")
        anchors = {a.chain_id: a for a in await record_anchors(conn, sixth, kept)}
        anchors |= {a.chain_id: a for a in await record_anchors(
            conn, last + timedelta(seconds=1), emptied)}
        assert anchors[kept].seq == 5
        assert anchors[emptied].seq == 10
        # The operator's archive step (docs/audit-retention.md), once entries are exported.
        async with conn.transaction():
            await conn.execute(ARCHIVE)
        assert await conn.fetchval("select min(seq) from audit_log where org_id = $1",
                                   kept) == 6
        report = await _verify(urls)
        assert report.breaks == []
        assert report.entries == 5 + 2
        await conn.execute("delete from audit_anchors where chain_id = $1", kept)
        broken = await _verify(urls, kept)
        assert [b.describe() for b in broken.breaks] == [
            f"org {kept}: seq 1: entries 1 to 5 are missing and no anchor was recorded at "
            f"seq 5 (first entry left: {(await entry_ids(conn, kept))[6]})"]

    async def test_anchor_refuses_a_broken_chain(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str]) -> None:
        urls, conn = owner
        (org,) = await populate(urls, orgs=1, entries=3)
        await conn.execute("alter table audit_log disable trigger user")
        await conn.execute("update audit_log set action = 'org.disabled' "
                           "where org_id = $1 and seq = 2", org)
        await conn.execute("alter table audit_log enable trigger user")
        result = await asyncio.to_thread(cli, urls, environ, "anchor", "--before",
                                         "2999-01-01T00:00:00Z")
        assert result.returncode == 1
        assert "refused" in result.stdout
        assert await conn.fetchval("select count(*) from audit_anchors") == 0


class TestMigration:
    async def test_entries_written_before_the_chain_existed_are_chained(
            self, postgres: PostgresServer, tmp_path: Path) -> None:
        for path in sorted(sql_dir().glob("00[123]_*.sql")):
            shutil.copy(path, tmp_path)
        urls = await make_database(postgres, "chain_backfill", migrated=False)
        await migrate(urls.owner, urls.runtime, tmp_path)
        conn = await asyncpg.connect(urls.owner)
        try:
            org = await conn.fetchval("insert into orgs (name) values ('Old') returning id")
            await conn.execute("""
                insert into audit_log (org_id, actor_type, action, ip, details)
                select case when g % 3 = 0 then null else $1::uuid end, 'system',
                       'org.updated', '10.0.0.1', jsonb_build_object('n', g, 's', 'Grüße')
                from generate_series(1, 9) g""", org)
            await migrate(urls.owner, urls.runtime)
            seqs = await conn.fetch("select seq from audit_log where org_id = $1 "
                                    "order by occurred_at, id", org)
            assert [r["seq"] for r in seqs] == [1, 2, 3, 4, 5, 6]
            words = await conn.fetchval("select count(distinct entry_id) from audit_log_terms "
                                        "where term = 'grüße'")
            assert words == 9
        finally:
            await conn.close()
        report = await _verify(urls)
        assert report.breaks == []
        assert {w.chain_id: w.entries for w in report.chains} == {org: 6, NIL: 3}
