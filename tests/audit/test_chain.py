"""The audit log's hash chains: `audit verify` on a clean database, then on one a
superuser tampered with behind the application's back; the owner's rewrite the keyed
chain refuses (sql/018), a hidden search term, witness files; per-org locking; anchors and
archiving; existing rows chained by the migration and kept as an unkeyed segment. Each
test has a database of its own."""

from __future__ import annotations

import asyncio
import base64
import json
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
from archomata.db import Tx, create_pool, service_tx
from archomata.identity.onboarding import create_user_with_org
from archomata.ops.devservers import DatabaseUrls, PostgresServer
from archomata.ops.migrations import migrate, sql_dir
from tests.conftest import AUDIT_KEY, make_database
from tests.factories import unique_email

ACTOR = AuditContext(ActorType.USER, UUID(int=7), ip="198.51.100.4", user_agent="chain test",
                     request_id="req-chain")
# The archive step exactly as docs/audit-retention.md tells operators to run it.
ARCHIVE = re.search(r"```sql\n\s*-- archive\n(.*?)```", (
    Path(__file__).resolve().parents[2] / "docs" / "audit-retention.md").read_text(),
    re.DOTALL)[1]  # type: ignore[index]
KEY = base64.b64decode(AUDIT_KEY)
INSERT = "insert into audit_log (org_id, actor_type, action) values ($1, 'system', 'org.updated')"
# The review's rewrite, as the owner: entry 3 deleted, every later one moved down a seq
# and re-hashed with the unkeyed SHA-256 of sql/004 (the chain's function before it was
# keyed), the head moved to the new end.
REWRITE = """
do $$
declare
    e audit_log;
    prev bytea;
begin
    delete from audit_log where org_id = '{org}' and seq = 3;
    select hash into prev from audit_log where org_id = '{org}' and seq = 2;
    for e in select * from audit_log where org_id = '{org}' and seq > 3 order by seq loop
        e.seq := e.seq - 1;
        e.prev_hash := prev;
        e.hash := audit_entry_hash(e);
        update audit_log set seq = e.seq, prev_hash = e.prev_hash, hash = e.hash
        where id = e.id;
        prev := e.hash;
    end loop;
    update audit_chain_heads set seq = seq - 1, hash = prev where chain_id = '{org}';
end
$$"""
# Every entry of a chain re-hashed with the unkeyed function, from seq 1.
REHASH_ALL = """
do $$
declare
    e audit_log;
    prev bytea := decode(repeat('00', 32), 'hex');
begin
    for e in select * from audit_log where org_id = '{org}' order by seq loop
        e.prev_hash := prev;
        e.hash := audit_entry_hash(e);
        update audit_log set prev_hash = e.prev_hash, hash = e.hash where id = e.id;
        prev := e.hash;
    end loop;
    update audit_chain_heads set hash = prev where chain_id = '{org}';
end
$$"""


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


def cli(urls: DatabaseUrls, environ: dict[str, str | None],
        *args: str) -> subprocess.CompletedProcess[str]:
    env = {**environ, "ARCHOMATA_DATABASE_URL": urls.runtime,
           "ARCHOMATA_DATABASE_OWNER_URL": urls.owner}
    env = {k: v for k, v in env.items() if v is not None}
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
        mac = "content does not match its MAC under ARCHOMATA_AUDIT_KEY (edited, " \
              "re-hashed or written without the key)"
        assert f"BROKEN {edited} seq 3 (entry {before[edited][3]}): {mac}" in lines
        assert f"BROKEN {deleted} seq 5: entry seq 5 is missing (deleted?); the next " \
               f"entry present is seq 6, {before[deleted][6]}" in lines
        assert f"BROKEN {swapped} seq 4 (entry {before[swapped][5]}): does not link to " \
               "the entry before it (reordered, replaced or inserted out of band)" in lines
        assert f"BROKEN {rehashed} seq 2 (entry {before[rehashed][2]}): {mac}" in lines
        assert f"BROKEN {cut} seq 8: entry seq 8 is missing from the end (the chain " \
               "head says seq 8)" in lines
        assert lines[-1] == "audit verify: 6 chains, 19 entries checked, 5 broken"
        fine = await asyncio.to_thread(cli, urls, environ, "verify", "--org", "none")
        assert fine.returncode == 0, fine.stdout


def runtime_tx(conn: asyncpg.Connection, org: UUID) -> Tx:
    return Tx(conn, org, None, False)


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
            await record(runtime_tx(holder, first), ACTOR, AuditAction.ORG_UPDATED)
            async with other.transaction():
                await other.execute("select set_config('app.org_id', $1, true)", str(second))
                await other.execute("set local lock_timeout = '2s'")
                # another org: no wait
                await record(runtime_tx(other, second), ACTOR, AuditAction.ORG_UPDATED)
            waiting = same.transaction()
            await waiting.start()
            await same.execute("select set_config('app.org_id', $1, true)", str(first))
            await same.execute("set local lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):  # the same org: waits
                await record(runtime_tx(same, first), ACTOR, AuditAction.ORG_UPDATED)
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
        first, second = await populate(urls, orgs=2, entries=1)
        runtime = await asyncpg.connect(urls.runtime)
        forge = ("insert into audit_log (org_id, actor_type, action, seq, prev_hash, hash, "
                 "occurred_at) values ($1, 'system', 'org.updated', $2, $3, $4, '2000-01-01')")

        async def as_first(sql: str, *args: object) -> None:
            async with runtime.transaction():
                await runtime.execute("select set_config('app.org_id', $1, true)", str(first))
                await runtime.execute(sql, *args)

        try:
            head = await conn.fetchrow("select seq, hash from audit_chain_heads "
                                       "where chain_id = $1", first)
            # Not the next link, or no hash at all: refused.
            for seq, prev, mac in ((99, bytes(32), bytes(32)),
                                   (head["seq"] + 1, bytes(head["hash"]), None)):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await as_first(forge, first, seq, prev, mac)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # another org's chain
                await as_first("select * from audit_chain_next($1)", [second])
            for table in ("audit_chain_heads", "audit_anchors", "audit_chain_legacy"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await runtime.fetch(f"select * from {table}")
            assert (await _verify(urls)).breaks == []
            # The next link with a made-up MAC: SQL cannot tell it without the key; verify
            # can.
            await as_first(forge, first, head["seq"] + 1, bytes(head["hash"]), bytes(32))
        finally:
            await runtime.close()
        assert [(b.chain_id, b.seq) for b in (await _verify(urls)).breaks] == [(first, 2)]


class TestOwnerRewrite:
    """What whoever holds the database can do without the key, refused by verify."""

    async def test_the_reviews_rewrite_with_plain_sha256_is_refused(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str]) -> None:
        urls, conn = owner
        rewritten, untouched = await populate(urls, orgs=2, entries=6)
        ids = await entry_ids(conn, rewritten)
        await conn.execute("alter table audit_log disable trigger user")
        await conn.execute(REWRITE.format(org=rewritten))
        await conn.execute("alter table audit_log enable trigger user")
        assert await conn.fetchval("select max(seq) from audit_log where org_id = $1",
                                   rewritten) == 5  # a chain that links, head and all
        result = await asyncio.to_thread(cli, urls, environ, "verify")
        assert result.returncode == 1, result.stdout
        assert result.stdout.splitlines() == [
            f"BROKEN {rewritten} seq 3 (entry {ids[4]}): content does not match its MAC "
            "under ARCHOMATA_AUDIT_KEY (edited, re-hashed or written without the key)",
            "audit verify: 3 chains, 10 entries checked, 1 broken"]
        fine = await asyncio.to_thread(cli, urls, environ, "verify", "--org", str(untouched))
        assert fine.returncode == 0, fine.stdout

    async def test_a_whole_chain_rehashed_as_an_unkeyed_segment_is_refused(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection]) -> None:
        urls, conn = owner
        (org,) = await populate(urls, orgs=1, entries=5)
        # The owner claims the whole chain predates the key: a boundary of its own making,
        # every entry re-hashed with the unkeyed function from seq 1.
        await conn.execute("alter table audit_log disable trigger user")
        await conn.execute(REHASH_ALL.format(org=org))
        await conn.execute("insert into audit_chain_legacy select chain_id, seq, hash "
                           "from audit_chain_heads where chain_id = $1", org)
        await conn.execute("alter table audit_log enable trigger user")
        report = await _verify(urls, org)
        assert [(b.seq, b.reason) for b in report.breaks] == [
            (1, "content does not match its MAC under ARCHOMATA_AUDIT_KEY (edited, "
                "re-hashed or written without the key)")]

    async def test_a_search_term_deleted_to_hide_an_entry_is_found(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str]) -> None:
        urls, conn = owner
        (org,) = await populate(urls, orgs=1, entries=4)
        entry = (await entry_ids(conn, org))[3]
        await conn.execute("select set_config('app.platform', 'on', false)")  # past FORCE RLS
        assert await conn.fetchval("select count(*) from audit_log_terms where entry_id = $1 "
                                   "and term = 'updated'", entry) == 1
        await conn.execute("delete from audit_log_terms where entry_id = $1 "
                           "and term = 'updated'", entry)
        result = await asyncio.to_thread(cli, urls, environ, "verify")
        assert result.returncode == 1
        assert f"BROKEN {org} seq 3 (entry {entry}): search terms missing, so `q` does not " \
               "find it: updated" in result.stdout.splitlines()

    async def test_a_rewritten_search_function_is_named(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection]) -> None:
        urls, conn = owner
        await populate(urls, orgs=1, entries=2)
        # A word left out of the terms and, through the same function, out of the check.
        await conn.execute("""
            create or replace function audit_search_terms(document text) returns text[]
                language sql immutable parallel safe
                as $$ select array(select w from unnest(string_to_array(lower(document), ' ')) w
                                   where w <> 'secret-deal') $$""")
        report = await _verify(urls)
        assert report.changed_functions == ["audit_search_terms(text)"]
        assert report.problems()[-1].startswith("search terms: function audit_search_terms")


class TestWitness:
    async def test_a_witness_file_catches_a_truncation_the_database_hides(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str], tmp_path: Path) -> None:
        urls, conn = owner
        (org,) = await populate(urls, orgs=1, entries=6)
        witness = tmp_path / "heads.jsonl"
        made = await asyncio.to_thread(cli, urls, environ, "anchor", "--output", str(witness))
        assert made.returncode == 0, made.stdout + made.stderr
        lines = [json.loads(line) for line in witness.read_text().splitlines()]
        assert {(line["chain"], line["seq"]) for line in lines} == {(str(org), 6), ("none", 2)}
        assert await conn.fetchval("select count(*) from audit_anchors") == 0  # heads only
        # The owner cuts the last two entries and moves the head back: nothing in the
        # database tells.
        await conn.execute("alter table audit_log disable trigger user")
        await conn.execute("delete from audit_log where org_id = $1 and seq > 4", org)
        await conn.execute("update audit_chain_heads h set seq = 4, hash = a.hash "
                           "from audit_log a where h.chain_id = $1 and a.org_id = $1 "
                           "and a.seq = 4", org)
        await conn.execute("alter table audit_log enable trigger user")
        alone = await asyncio.to_thread(cli, urls, environ, "verify")
        assert alone.returncode == 0, alone.stdout
        witnessed = await asyncio.to_thread(cli, urls, environ, "verify", "--witness",
                                            str(witness))
        assert witnessed.returncode == 1
        assert f"BROKEN {org} seq 5: entries 5 to 6 are missing: the witness file signed a " \
               "head at seq 6 (cut off the end, or rewritten)" in witnessed.stdout.splitlines()

    async def test_a_witness_on_stdout_and_one_not_signed_by_the_key(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str], tmp_path: Path) -> None:
        urls, _ = owner
        await populate(urls, orgs=1, entries=2)
        made = await asyncio.to_thread(cli, urls, environ, "anchor", "--output", "-")
        assert made.returncode == 0, made.stderr
        witness = tmp_path / "heads.jsonl"
        witness.write_text(made.stdout)
        assert "signed heads written to standard output" in made.stderr
        ok = await asyncio.to_thread(cli, urls, environ, "verify", "--witness", str(witness))
        assert ok.returncode == 0, ok.stdout
        forged = [json.loads(line) for line in made.stdout.splitlines()]
        forged[0]["seq"] = 1  # a shorter head, as a truncating owner would want it
        witness.write_text("".join(json.dumps(line) + "\n" for line in forged))
        refused = await asyncio.to_thread(cli, urls, environ, "verify", "--witness",
                                          str(witness))
        assert refused.returncode == 1
        assert "is not signed by this ARCHOMATA_AUDIT_KEY" in refused.stdout

    async def test_verify_and_anchor_without_the_key_exit_naming_it(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection],
            environ: dict[str, str]) -> None:
        urls, _ = owner
        for args in (("verify",), ("anchor", "--output", "-")):
            result = await asyncio.to_thread(cli, urls, {**environ, "ARCHOMATA_AUDIT_KEY": None},
                                             *args)
            assert result.returncode == 2
            assert "ARCHOMATA_AUDIT_KEY is required" in result.stderr
            assert result.stdout == ""
        same = await asyncio.to_thread(
            cli, urls, {**environ, "ARCHOMATA_AUDIT_KEY": environ["ARCHOMATA_DATA_KEY"]},
            "verify")
        assert same.returncode == 2
        assert "ARCHOMATA_AUDIT_KEY must not be ARCHOMATA_DATA_KEY" in same.stderr


async def _verify(urls: DatabaseUrls, org_id: UUID | None = None) -> Report:
    conn = await asyncpg.connect(urls.owner)
    try:
        return await verify(conn, KEY, org_id)
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
        anchors = {a.chain_id: a for a in (await record_anchors(conn, KEY, sixth, kept))[0]}
        anchors |= {a.chain_id: a for a in (await record_anchors(
            conn, KEY, last + timedelta(seconds=1), emptied))[0]}
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
            f"{kept} seq 1: entries 1 to 5 are missing and no anchor was recorded at "
            f"seq 5 (first entry left: {(await entry_ids(conn, kept))[6]})"]

    async def test_an_anchor_the_owner_writes_without_the_key_is_ignored(
            self, owner: tuple[DatabaseUrls, asyncpg.Connection]) -> None:
        urls, conn = owner
        (org,) = await populate(urls, orgs=1, entries=6)
        # Entries 1 to 3 deleted, an anchor at 3 made up from the hash the table shows.
        await conn.execute("alter table audit_log disable trigger user")
        await conn.execute("insert into audit_anchors (chain_id, seq, hash) select org_id, "
                           "seq, hash from audit_log where org_id = $1 and seq = 3", org)
        await conn.execute("delete from audit_log where org_id = $1 and seq <= 3", org)
        await conn.execute("alter table audit_log enable trigger user")
        broken = await _verify(urls, org)
        assert [(b.seq, b.reason.split(" (")[0]) for b in broken.breaks] == [
            (1, "entries 1 to 3 are missing and no anchor was recorded at seq 3")]

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
    async def test_entries_written_before_the_key_stay_an_unkeyed_segment_that_verifies(
            self, postgres: PostgresServer, tmp_path: Path) -> None:
        """Entries of sql/004's unkeyed chain verify as before; the first keyed entry (the
        manifest) seals where each segment ends, so rewriting them is caught even in a
        chain nothing was appended to since."""
        for path in sorted(sql_dir().glob("0*.sql")):
            if path.name < "018":
                shutil.copy(path, tmp_path)
        urls = await make_database(postgres, "chain_legacy", migrated=False)
        await migrate(urls.owner, urls.runtime, tmp_path)
        conn = await asyncpg.connect(urls.owner)
        try:
            active, dormant = [await conn.fetchval(
                "insert into orgs (name) values ($1) returning id", name)
                for name in ("Active", "Dormant")]
            await conn.execute("""
                insert into audit_log (org_id, actor_type, action, ip, details)
                select case g % 3 when 0 then null when 1 then $1::uuid else $2::uuid end,
                       'system', 'org.updated', '10.0.0.1', jsonb_build_object('n', g)
                from generate_series(1, 9) g""", active, dormant)
            await migrate(urls.owner, urls.runtime)
            assert (await _verify(urls)).breaks == []  # before any keyed entry
            # Keyed entries after the unkeyed ones, in the active org's chain and the one
            # without an org (whose first keyed entry is the manifest).
            pool = await create_pool(urls.runtime, min_size=1, max_size=1)
            try:
                async with service_tx(pool, org_id=active) as tx:
                    for _ in range(2):
                        await record(tx, ACTOR, AuditAction.ORG_UPDATED)
                assert (await _verify(urls)).breaks == []  # no manifest yet: still due
                async with service_tx(pool) as tx:
                    await record(tx, ACTOR, AuditAction.AUTH_LOGIN_FAILED)
            finally:
                await pool.close()
            await conn.execute("select set_config('app.platform', 'on', false)")
            manifest = await conn.fetchrow("select seq, details from audit_log where action "
                                           "= 'audit.chain_keyed'")
            assert manifest["seq"] == 4  # after the three unkeyed entries without an org
            assert {e["chain"]: e["seq"] for e in json.loads(manifest["details"])["legacy"]} \
                == {str(active): 3, str(dormant): 3, str(NIL): 3}
            report = await _verify(urls)
            assert report.breaks == []
            assert {w.chain_id: w.entries for w in report.chains} == {
                active: 5, dormant: 3, NIL: 5}
            # The owner edits an unkeyed entry of each org and re-hashes the chain unkeyed:
            # the seal of the segment's end no longer holds.
            await conn.execute("alter table audit_log disable trigger user")
            for org in (active, dormant):
                await conn.execute("update audit_log set details = '{\"n\": 0}' "
                                   "where org_id = $1 and seq = 2", org)
                await conn.execute(REHASH_ALL.replace("order by seq", "and seq <= 3 order by "
                                                      "seq").format(org=org))
            await conn.execute("alter table audit_log enable trigger user")
        finally:
            await conn.close()
        report = await _verify(urls)
        assert {(b.chain_id, b.seq) for b in report.breaks} == {(active, 3), (dormant, 3)}
        assert all("does not end in the hash the keyed manifest sealed" in b.reason
                   for b in report.breaks)
