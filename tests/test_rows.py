"""Store row types built from real asyncpg records without the frozen __init__."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
import orjson
import pytest

from archomata import rows
from archomata.web.json_io import dumps


@dataclasses.dataclass(frozen=True)
class Row:
    id: UUID
    name: str
    amount: Decimal | None
    at: datetime


SELECT = """
    select gen_random_uuid() as id, 'row ' || i as name, (i * 1.5)::numeric(10, 2) as amount,
           now() as at
    from generate_series(1, 3) i
"""


class TestFromRecords:
    async def test_positional_build_equals_the_dataclass_init(
            self, owner_conn: asyncpg.Connection) -> None:
        records = await owner_conn.fetch(SELECT)
        built = rows.from_records(Row, records)
        assert built == [Row(r["id"], r["name"], r["amount"], r["at"]) for r in records]
        assert [b.name for b in built] == ["row 1", "row 2", "row 3"]

    async def test_columns_in_another_order_or_extra_are_taken_by_name(
            self, owner_conn: asyncpg.Connection) -> None:
        records = await owner_conn.fetch(
            "select now() as at, 'x' as extra, 2.50::numeric as amount, 'n' as name, "
            "gen_random_uuid() as id")
        [built] = rows.from_records(Row, records)
        assert (built.name, built.amount, built.at) == ("n", Decimal("2.50"), records[0]["at"])
        assert rows.from_record(Row, records[0]) == built

    async def test_a_missing_column_is_an_error_not_a_half_built_row(
            self, owner_conn: asyncpg.Connection) -> None:
        records = await owner_conn.fetch("select gen_random_uuid() as id, 'n' as name")
        with pytest.raises(KeyError):
            rows.from_records(Row, records)

    async def test_built_rows_stay_frozen_and_serialise_like_init_built_ones(
            self, owner_conn: asyncpg.Connection) -> None:
        [record] = await owner_conn.fetch(SELECT + " limit 1")
        built = rows.from_record(Row, record)
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.name = "changed"  # type: ignore[misc]
        assert dumps(built) == dumps(Row(*record))
        assert orjson.loads(dumps(built))["amount"] == "1.50"

    def test_build_refuses_a_wrong_count_of_values(self) -> None:
        with pytest.raises(ValueError, match="has 4 fields, not 3"):
            rows.build(Row, (UUID(int=1), "n", None))
        assert rows.from_records(Row, []) == []
