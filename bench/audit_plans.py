"""Query plans of the audit log listings on a table of a million entries.

    .venv/bin/python bench/audit_plans.py [--entries 1000000]

Starts a throwaway PostgreSQL, migrates a database, loads synthetic entries as the owner
with generate_series (one big org holding a fifth of them, a thousand small ones, a few
without an org), ANALYZEs, then EXPLAINs (ANALYZE) every query GET /audit-logs and GET
/admin/audit-logs can send, as the runtime role under row-level security, exactly as
archomata.audit.store builds them. Prints each plan's access path and timing, and
exits non-zero if a query reads audit_log or audit_log_terms without an index.
tests/audit/test_store_plans.py runs the same checks on a smaller table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from archomata.audit.store import (
    ORDERED_WALK,
    AuditFilter,
    search_terms,
    select_sql,
    walks_every_chain,
)
from archomata.db import Tx

BIG_ORG = UUID("b16b16b1-0000-4000-8000-000000000001")
SMALL_ORGS = 1000
ACTORS = 20_000
WORDS = 2000
PAGE = 51

# Entry g: org by g (a fifth in BIG_ORG, 2% without an org, the rest spread), one of
# ACTIONS actions, one of ACTORS actors, a uuid resource, details with vocabulary words;
# time runs forward with g (the table is append-only, so physical order is time order).
LOAD = f"""
insert into orgs (id, name)
select ('00000000-0000-4000-8000-' || lpad(to_hex(o), 12, '0'))::uuid, 'Org ' || o
from generate_series(1, {SMALL_ORGS}) o
union all select '{BIG_ORG}'::uuid, 'Big org';

alter table audit_log disable trigger user;

insert into audit_log (id, occurred_at, org_id, actor_type, actor_id, action, resource_type,
                       resource_id, ip, user_agent, request_id, details, seq, prev_hash, hash)
select md5('e' || g)::uuid,
       timestamptz '2025-01-01' + g * interval '30 seconds',
       org, 'user', md5('actor' || (g % {ACTORS}))::uuid,
       (array['auth.login.succeeded', 'auth.login.failed', 'order.created', 'order.cancelled',
              'account.updated', 'strategy.updated', 'member.invited', 'group.updated'])
           [1 + g % 8] || case when g % 5 = 1 then '_' || chr(97 + (g % 26)::int) else '' end,
       (array['session', 'order', 'account', 'strategy', 'member', 'group', 'user'])[1 + g % 7],
       md5('r' || g)::uuid::text,
       ('10.' || (g % 250) || '.' || (g % 199) || '.' || (g % 7))::inet,
       'Mozilla/5.0 bench', md5('q' || g),
       jsonb_build_object('email', 'person' || (g % {ACTORS}) || '@example.test',
                          'note', 'w' || (g * 7919 % {WORDS}) || ' w' || (g * 104729 % {WORDS}),
                          'volume', (g % 100) || '.5'),
       -- A valid seq per chain; the hashes are placeholders (plans do not read them).
       row_number() over (partition by org order by g),
       sha256(md5('p' || g)::bytea), sha256(md5('h' || g)::bytea)
from (select g, case when g % 50 = 0 then null
                     when g % 5 = 0 then '{BIG_ORG}'::uuid
                     else ('00000000-0000-4000-8000-'
                           || lpad(to_hex(1 + g % {SMALL_ORGS}), 12, '0'))::uuid end as org
      from generate_series(1::bigint, $1::int) g) s;

-- The words audit_search_terms() finds in these entries, put together with string
-- functions: the regexp-based function costs ~60 us an entry, too slow to load with.
-- load() checks a sample against the real function.
insert into audit_log_terms (chain_id, term, occurred_at, entry_id)
select distinct coalesce(a.org_id, '00000000-0000-0000-0000-000000000000'), t.term,
       a.occurred_at, a.id
from audit_log a,
     unnest(string_to_array(a.action, '.')
            || array[a.resource_type, a.resource_id, split_part(a.details->>'volume', '.', 1)]
            || string_to_array(translate(a.details->>'email', '@.', '  '), ' ')
            || string_to_array(a.details->>'note', ' ')) t(term)
where length(t.term) >= 2;

alter table audit_log enable trigger user;
"""


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    where: AuditFilter
    after: bool = False
    platform: bool = False
    index: str | None = None  # the index the plan must use; None: any index
    ordered: bool = False  # walks `index` in the list's order: sorts no more than a page


def small_org(n: int) -> UUID:
    return UUID(f"00000000-0000-4000-8000-{n:012x}")


def cases(org: UUID, sample: dict[str, Any]) -> list[Case]:
    """Every filter of the org listing, then of the platform listing, on `org`; `sample`
    holds values that exist in it (an actor, a resource, a day)."""
    day = sample["cursor_at"] - timedelta(days=1)
    base = AuditFilter(org_id=org)
    actor, resource = sample["actor_id"], sample["resource_id"]
    org_cases = [
        Case("org listing", base, index="audit_log_org_time_idx"),
        Case("org listing, next page", base, after=True, index="audit_log_org_time_idx"),
        Case("org + actor_id", replace(base, actor_id=actor), index="audit_log_org_actor_idx",
             ordered=True),
        Case("org + action", replace(base, action="order.created"),
             index="audit_log_action_idx"),
        Case("org + rare action", replace(base, action="order.created_c"),
             index="audit_log_action_idx"),
        Case("org + resource_type", replace(base, resource_type="strategy"),
             index="audit_log_resource_type_idx"),
        Case("org + resource_id", replace(base, resource_id=resource),
             index="audit_log_resource_idx"),
        Case("org + from/to", replace(base, since=day, until=day + timedelta(hours=12)),
             index="audit_log_org_time_idx"),
        Case("org + q (common word)", replace(base, terms=("order",)),
             index="audit_log_terms_idx"),
        Case("org + q (rare word)", replace(base, terms=("w1234",)),
             index="audit_log_terms_idx"),
        Case("org + q (two words)", replace(base, terms=("w1234", "created")),
             index="audit_log_terms_idx"),
        Case("org + q, next page", replace(base, terms=("order",)), after=True,
             index="audit_log_terms_idx"),
        Case("org + every filter", replace(base, action="order.created", since=day,
                                           until=day + timedelta(days=30), terms=("order",))),
    ]
    platform = [
        Case("platform listing", AuditFilter(), platform=True, index="audit_log_time_idx"),
        Case("platform + org_id", base, platform=True),
        Case("platform + actor_id", AuditFilter(actor_id=actor), platform=True,
             index="audit_log_actor_idx"),
        Case("platform + rare action", AuditFilter(action="order.created_c"),
             platform=True, index="audit_log_action_idx"),
        Case("platform + resource_id", AuditFilter(resource_id=resource), platform=True,
             index="audit_log_resource_idx"),
        Case("platform + q (rare word)", AuditFilter(terms=("w1234",)), platform=True,
             index="audit_log_terms_time_idx", ordered=True),
        Case("platform + q (common word)", AuditFilter(terms=("order",)), platform=True,
             index="audit_log_terms_time_idx", ordered=True),
    ]
    return org_cases + platform


INDEXES = """
    select indexname, indexdef from pg_indexes
    where tablename in ('audit_log', 'audit_log_terms') and indexname not like '%pkey'
"""


SAME_TERMS = """
    select count(*) from (select * from audit_log tablesample system (1) limit 200) a
    where audit_search_terms(audit_entry_document(a)) is distinct from array(
        select term from audit_log_terms t where t.entry_id = a.id order by term)
"""


async def load(owner: asyncpg.Connection, entries: int) -> None:
    """Loads `entries` synthetic entries as the owner, the indexes built afterwards
    (from their own definitions, as the migrations made them) to load faster."""
    await owner.execute("set maintenance_work_mem = '256MB'")
    async with owner.transaction():
        indexes = await owner.fetch(INDEXES)
        for index in indexes:
            await owner.execute(f"drop index {index['indexname']}")
        await owner.execute(LOAD.replace("$1::int", str(int(entries))))
        for index in indexes:
            await owner.execute(index["indexdef"])
        assert not await owner.fetchval(SAME_TERMS), "the loader's words differ from SQL's"
    await owner.execute("vacuum analyze audit_log")
    await owner.execute("vacuum analyze audit_log_terms")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


@dataclass(frozen=True, slots=True)
class PlanResult:
    case: Case
    scans: list[str]  # "Index Scan audit_log_org_time_idx", "Seq Scan audit_log", ...
    rows: int
    ms: float
    sorted_rows: int = 0  # the most rows a Sort node took in (a page's worth is cheap)

    @property
    def problems(self) -> list[str]:
        found = [s for s in self.scans if s.startswith("Seq Scan")]
        used = " ".join(self.scans)
        if self.case.index and self.case.index not in used:
            found.append(f"expected {self.case.index}")
        if not any(" audit_log" in s for s in self.scans):
            found.append("no index on audit_log")
        if self.case.ordered and self.sorted_rows > PAGE:
            found.append(f"sorts {self.sorted_rows} rows")
        return found


async def explain(runtime: asyncpg.Connection, case: Case, sample: dict[str, Any]) -> PlanResult:
    """EXPLAIN ANALYZE of the listing query, as the runtime role in the listing's scope."""
    after = (sample["cursor_at"], sample["cursor_id"]) if case.after else None
    scope = ("app.platform", "on") if case.platform else ("app.org_id", str(case.where.org_id))
    async with runtime.transaction():
        await runtime.execute("select set_config($1, $2, true)", *scope)
        where = case.where
        if where.terms:  # rarest first, as the handler orders them
            terms, _ = await search_terms(Tx(runtime, None, None, case.platform),
                                          " ".join(where.terms), where.org_id)
            where = replace(where, terms=terms)
        sql, params = select_sql(where, after, PAGE)
        if walks_every_chain(where):  # as list_page does
            await runtime.execute(ORDERED_WALK)
        raw = await runtime.fetchval(f"explain (analyze, format json) {sql}", *params)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    scans = [f"{n['Node Type']} {n.get('Index Name') or n.get('Relation Name')}"
             for n in _nodes(plan["Plan"]) if "Scan" in n["Node Type"]]
    sorted_rows = max((sum(c["Actual Rows"] * c.get("Actual Loops", 1) for c in n["Plans"])
                       for n in _nodes(plan["Plan"]) if n["Node Type"] == "Sort"), default=0)
    return PlanResult(case, scans, plan["Plan"]["Actual Rows"], plan["Execution Time"],
                      sorted_rows)


async def sample_of(owner: asyncpg.Connection, org: UUID) -> dict[str, Any]:
    row = await owner.fetchrow(
        "select actor_id, resource_id, occurred_at, id from audit_log where org_id = $1 "
        "order by occurred_at desc, id desc offset least(500, (select count(*) / 2 "
        "from audit_log where org_id = $1)) limit 1", org)
    return {"actor_id": row["actor_id"], "resource_id": row["resource_id"],
            "cursor_at": row["occurred_at"], "cursor_id": row["id"]}


async def check(owner_dsn: str, runtime_dsn: str, orgs: list[UUID]) -> list[PlanResult]:
    owner = await asyncpg.connect(owner_dsn)
    runtime = await asyncpg.connect(runtime_dsn)
    try:
        results = []
        for org in orgs:
            sample = await sample_of(owner, org)
            for case in cases(org, sample):
                results.append(await explain(runtime, case, sample))
        return results
    finally:
        await owner.close()
        await runtime.close()


def report(results: list[PlanResult]) -> str:
    lines = []
    for r in results:
        org = "big org" if r.case.where.org_id == BIG_ORG else "small org"
        flag = "  <-- " + ", ".join(r.problems) if r.problems else ""
        lines.append(f"{r.case.name:28} {org:9} {r.ms:8.2f} ms {r.rows:4} rows  "
                     f"{'; '.join(dict.fromkeys(r.scans))}{flag}")
    return "\n".join(lines)


async def measure(urls: Any, entries: int) -> list[PlanResult]:
    from archomata.ops.migrations import migrate

    await migrate(urls.owner, urls.runtime)
    owner = await asyncpg.connect(urls.owner)
    try:
        started = time.perf_counter()
        await load(owner, entries)
        size = await owner.fetchval(
            "select pg_size_pretty(pg_total_relation_size('audit_log')) || ', terms ' || "
            "pg_size_pretty(pg_total_relation_size('audit_log_terms'))")
    finally:
        await owner.close()
    print(f"loaded {entries} entries in {time.perf_counter() - started:.1f} s ({size})")
    return await check(urls.owner, urls.runtime, [BIG_ORG, small_org(7)])


def main(entries: int) -> int:
    from archomata.ops.devservers import PostgresServer, create_database, free_port, new_password

    with tempfile.TemporaryDirectory(prefix="archomata-bench-") as workdir:
        Path(workdir).chmod(0o755)  # PostgreSQL may run as `nobody`
        server = PostgresServer(Path(workdir) / "pg", free_port(), new_password(), durable=False)
        server.start()
        try:
            urls = asyncio.run(create_database(server, "audit_plans", new_password(),
                                               new_password()))
            results = asyncio.run(measure(urls, entries))
        finally:
            server.stop()
    print(report(results))
    failed = [r for r in results if r.problems]
    print(f"{len(results) - len(failed)}/{len(results)} plans served by the expected indexes")
    return 1 if failed else 0


if __name__ == "__main__":
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--entries", type=int, default=1_000_000)
    sys.exit(main(arguments.parse_args().entries))
