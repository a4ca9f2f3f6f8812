"""Audit log entries, read: the org listing, the platform listing and the export's pages.

Entries are written by archomata.audit.service.record alone. Each filter has an index
(sql/004_audit_chain.sql). The SQL is put together from fixed fragments, one per filter
given, so that each combination is planned for what it asks rather than as one generic
`$n is null or ...` plan; only parameters carry what the client sent.

Free text (`q`) is matched word by word against audit_log_terms with btree equality:
under row-level security only leakproof operators may serve as index conditions, and
equality on text and uuid is leakproof where `@@` and `ILIKE` are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from archomata import rows
from archomata.db import Tx
from archomata.sql import Params


@dataclass(frozen=True)
class AuditEntry:
    id: UUID
    occurred_at: datetime
    org_id: UUID | None
    actor_type: str
    actor_id: UUID | None
    action: str
    resource_type: str | None
    resource_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]
    seq: int


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What to list. `since` is inclusive, `until` exclusive; every term must appear, and
    the first, the rarest, drives a search."""

    org_id: UUID | None = None
    actor_id: UUID | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    terms: tuple[str, ...] = ()


COLUMNS = """a.id, a.occurred_at, a.org_id, a.actor_type, a.actor_id, a.action,
             a.resource_type, a.resource_id, host(a.ip) as ip, a.user_agent, a.request_id,
             a.details, a.seq"""
# Exports take each cell as the text PostgreSQL renders (FIELDS' order), and JSON Lines
# each line whole: no Python object per cell, so a million entries stream in seconds.
# Times as the API writes them: RFC 3339 in UTC with microseconds. A JSON line is followed
# by its keyset position (the encoder takes the first column only); a CSV row's position
# is in its own cells.
OCCURRED_AT = """to_char(a.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""
CSV_COLUMNS = f"""a.id::text as id, {OCCURRED_AT} as occurred_at,
                 a.org_id::text as org_id, a.actor_type, a.actor_id::text as actor_id,
                 a.action, a.resource_type, a.resource_id, host(a.ip) as ip, a.user_agent,
                 a.request_id, a.details::text as details, a.seq::text as seq"""
JSON_COLUMNS = f"""json_build_object(
                     'id', a.id, 'occurred_at', {OCCURRED_AT}, 'org_id', a.org_id,
                     'actor_type', a.actor_type, 'actor_id', a.actor_id, 'action', a.action,
                     'resource_type', a.resource_type, 'resource_id', a.resource_id,
                     'ip', host(a.ip), 'user_agent', a.user_agent, 'request_id', a.request_id,
                     'details', a.details, 'seq', a.seq)::text as line,
                   a.occurred_at as key_at, a.id as key_id"""
_EQUAL = ("actor_id", "action", "resource_type", "resource_id")
NO_ORG = "'00000000-0000-0000-0000-000000000000'::uuid"  # the chain of entries without an org


def _entry(row: asyncpg.Record) -> AuditEntry:
    return rows.from_record(AuditEntry, row)


def select_sql(where: AuditFilter, after: tuple[datetime, UUID] | None = None,
               limit: int | None = None, columns: str = COLUMNS,
               cap: int | None = None) -> tuple[str, list[Any]]:
    """The query for `where`, newest first, after the keyset position `after`.

    With words and a `cap`, at most `cap` candidates are examined (see _capped): the
    rows then carry `candidate`, and a row whose candidate is past the cap says the
    search stopped there.

    Row-level security blurs the planner's row estimates (its policy reads settings), so
    with words the access path is spelled out, fenced with OFFSET 0 where the planner
    would otherwise trade it for a hash join over every entry of the org:
    - words alone: walk the rarest word's entries in audit_log_terms_idx, newest first,
      fetch each entry by id, stop at `limit`;
    - words with an equality filter: walk that filter's index, newest first, and probe
      audit_log_terms_idx once per word and candidate.
    """
    param = Params()
    others = [n for n in _EQUAL if getattr(where, n) is not None]
    if where.terms and not others:
        return _by_word(where, after, limit, param, columns, cap), param
    clauses = []
    chain = f"coalesce(a.org_id, {NO_ORG})"
    if where.org_id is not None:
        chain = param(where.org_id)
        clauses.append(f"a.org_id = {chain}")
    clauses += [f"a.{name} = {param(getattr(where, name))}" for name in others]
    clauses += _time(where, after, "a.occurred_at", "a.id", param)
    probes = [_probe(term, chain, "a.occurred_at", "a.id", param) for term in where.terms]
    order = "a.occurred_at desc, a.id desc"
    if cap is not None and where.terms:
        walk = _finish(f"select a.*, row_number() over (order by {order}) as candidate "
                       "from audit_log a", clauses, order, cap + 1, param)
        return _capped(f"select {columns}, a.candidate from ({walk}) a", probes, cap, order,
                       limit, param), param
    sql = f"select {columns} from audit_log a"
    return _finish(sql, clauses + probes, order, limit, param), param


def _capped(sql: str, probes: list[str], cap: int, order: str, limit: int | None,
            param: Params, candidate: str = "a.candidate") -> str:
    """A search that examines at most `cap` candidates, newest first, so that words
    common apart and never together cost a bounded walk, not the org's whole log. The
    walk (numbered, limited to cap + 1) stays lazy: a page that fills early stops it. The
    candidate past the cap passes the probes as a sentinel, so the caller can tell a
    search that ran out of candidates from one that reached the bound."""
    sentinel = f"{candidate} > {param(cap)}"
    where = f"({sentinel} or ({' and '.join(probes)}))" if probes else sentinel
    return _finish(sql, [where], order, limit, param)


def _by_word(where: AuditFilter, after: tuple[datetime, UUID] | None, limit: int | None,
             param: Params, columns: str, cap: int | None = None) -> str:
    driver, *rest = where.terms
    clauses = [f"t.term = {param(driver)}"]
    entry = "a.id = t.entry_id"
    if where.org_id is not None:
        org = param(where.org_id)
        clauses.append(f"t.chain_id = {org}")
        entry += f" and a.org_id = {org}"
    clauses += _time(where, after, "t.occurred_at", "t.entry_id", param)
    probes = [_probe(term, "t.chain_id", "t.occurred_at", "t.entry_id", param)
              for term in rest]
    order = "t.occurred_at desc, t.entry_id desc"
    lateral = f"cross join lateral (select {columns} from audit_log a where {entry} offset 0) e"
    if cap is not None and rest:
        walk = _finish("select t.chain_id, t.occurred_at, t.entry_id, row_number() over "
                       f"(order by {order}) as candidate from audit_log_terms t",
                       clauses, order, cap + 1, param)
        # The probes and the entry read only for the candidates the walk hands over.
        sql = f"select e.*, t.candidate from ({walk}) t {lateral}"
        return _capped(sql, probes, cap, order, limit, param, "t.candidate")
    # The page is taken from the terms, walked in order (audit_log_terms_idx in a chain,
    # audit_log_terms_time_idx across them: sql/021), before any entry is read: the
    # entries fetched are the page's, however common the word.
    walk = _finish("select t.chain_id, t.occurred_at, t.entry_id from audit_log_terms t",
                   clauses + probes, order, limit, param)
    return f"select e.* from ({walk}) t {lateral} order by {order}"


def _time(where: AuditFilter, after: tuple[datetime, UUID] | None, at: str, key: str,
          param: Params) -> list[str]:
    clauses = []
    if where.since is not None:
        clauses.append(f"{at} >= {param(where.since)}")
    if where.until is not None:
        clauses.append(f"{at} < {param(where.until)}")
    if after is not None:
        clauses.append(f"({at}, {key}) < ({param(after[0])}, {param(after[1])})")
    return clauses


def _probe(term: str, chain: str, at: str, key: str, param: Params) -> str:
    # OFFSET 0 keeps this a per-row probe of the full index key, never a hash semi-join.
    return (f"exists (select from audit_log_terms u where u.term = {param(term)} and "
            f"u.chain_id = {chain} and u.occurred_at = {at} and u.entry_id = {key} offset 0)")


def _finish(sql: str, clauses: list[str], order: str, limit: int | None,
            param: Params) -> str:
    if clauses:
        sql += " where " + " and ".join(clauses)
    sql += f" order by {order}"
    if limit is not None:
        sql += f" limit {param(limit)}"
    return sql


# A search examines at most this many candidates a page (the rarest word's entries, or
# the filter's): about 0.1 s of one core here (bench/audit_search.py).
CANDIDATE_CAP = 20_000


class SearchTooBroad(Exception):
    """A search reached CANDIDATE_CAP before it filled its page."""


async def list_page(tx: Tx, where: AuditFilter, after: tuple[datetime, UUID] | None,
                    limit: int) -> list[AuditEntry]:
    """A page of entries; a search with words stops after CANDIDATE_CAP candidates
    (SearchTooBroad when the page is not full by then)."""
    sql, params = select_sql(where, after, limit, cap=CANDIDATE_CAP)
    if walks_every_chain(where):
        await tx.execute(ORDERED_WALK)
    found = await tx.fetch(sql, *params)
    # The row past the cap comes last. Behind a full page it is only the extra row that
    # says another page follows (the caller shows `limit - 1`): that page is the one
    # refused, not this one.
    if found and found[-1].get("candidate", 0) > CANDIDATE_CAP and len(found) < limit:
        raise SearchTooBroad
    return [_entry(r) for r in found]


# An export page walks an index in the list's order and stops after a page. Left to
# itself the planner, which row-level security leaves guessing, may instead collect every
# entry past the position and sort them, for each page: quadratic over an export
# (measured on 100k fresh entries: 10-35 s instead of 1 s). Every filter has an index in
# that order (sql/004), so the sort is never needed; for this transaction only.
ORDERED_WALK = "set local enable_sort = off"


def walks_every_chain(where: AuditFilter) -> bool:
    """A search of every org's words (the platform's `q` without org_id): its page must
    come from audit_log_terms_time_idx walked in order, which the planner, estimating
    that row-level security leaves a handful of a common word's entries, trades for
    reading and sorting every one (measured: 355 ms for a word in 1% of a million
    entries). One statement more, on the platform administrator's searches alone."""
    return bool(where.terms) and where.org_id is None


async def export_page(tx: Tx, where: AuditFilter, after: tuple[datetime, UUID] | None,
                      limit: int, json_lines: bool = False
                      ) -> tuple[list[Sequence[str | None]], tuple[datetime, UUID] | None]:
    """Up to `limit` matching entries after the keyset position `after`, newest first, as
    text cells in the order of CSV_COLUMNS or as one JSON text each (records of text:
    sequences, as the encoders take them), and the position of the last one."""
    sql, params = select_sql(where, after, limit,
                             columns=JSON_COLUMNS if json_lines else CSV_COLUMNS)
    await tx.execute(ORDERED_WALK)
    found = await tx.fetch(sql, *params)
    if not found:
        return [], None
    last = found[-1]
    if json_lines:
        return found, (last["key_at"], last["key_id"])
    # The cells are exact: microseconds in UTC, the id as written.
    return found, (datetime.fromisoformat(last["occurred_at"]), UUID(last["id"]))


# The words of a search as the trigger splits entries into them (one definition, in SQL),
# each with how often it occurs in the chain, counted up to a bound so that a common
# word costs no more than a rare one.
SEARCH_TERMS = """
    select w.term, (select count(*) from (
                        select from audit_log_terms t
                        where t.term = w.term and ($2::uuid is null or t.chain_id = $2)
                        limit 1000) s) as seen
    from unnest(audit_search_terms($1)) w(term)
    order by seen, length(w.term) desc, w.term
"""


async def search_terms(tx: Tx, text: str, org_id: UUID | None) -> tuple[tuple[str, ...], bool]:
    """The words of `text`, rarest first, and whether every one of them occurs at all
    (if one does not, nothing can match)."""
    found = await tx.fetch(SEARCH_TERMS, text, org_id)
    return tuple(r["term"] for r in found), all(r["seen"] for r in found)
