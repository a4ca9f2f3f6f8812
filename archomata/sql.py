"""SQL put together per filter: each combination of filters a list offers gets its own
statement, planned for what it asks.

One statement of `($n is null or column = $n)` serves every combination only while
PostgreSQL plans it for the values at hand; once it settles on a generic plan (after
five executions, when that looks no dearer) the plan must serve every combination at
once and walks the whole org (measured: 225-1,409 ms at a million orders instead of a
few). Only parameters carry what the client sent; the fragments are fixed text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID


class Params(list[Any]):
    """A statement's parameters, added as its fragments are written: `params(value)`
    appends the value and answers its placeholder (`$3`)."""

    def __call__(self, value: Any) -> str:
        self.append(value)
        return f"${len(self)}"


def newest_first(select: str, params: Params, clauses: Sequence[str], at: str, key: str,
                 after: tuple[datetime, UUID] | None, limit: int) -> str:
    """`select` where every clause holds, newest first by (`at`, `key`) after the keyset
    position `after`, at most `limit` rows: the order of the index each list walks."""
    where = list(clauses)
    if after is not None:
        where.append(f"({at}, {key}) < ({params(after[0])}, {params(after[1])})")
    sql = select + (" where " + " and ".join(where) if where else "")
    return f"{sql} order by {at} desc, {key} desc limit {params(limit)}"
