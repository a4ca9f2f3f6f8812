"""CSV and JSON Lines encoding of audit entries: quoting, and no formula injection."""

from __future__ import annotations

import csv
import io
import json

import pytest

from archomata.audit.export_formats import FIELDS, CsvEncoder, JsonlEncoder, csv_cell


def row(**changes: str | None) -> tuple[str | None, ...]:
    """Text cells as the store's CSV_COLUMNS yield them."""
    values: dict[str, str | None] = {
        "id": "0b8e3f52-6c55-4a8d-9a64-8f6b1c0c1f00", "occurred_at": "2025-01-02T03:04:05+00:00",
        "org_id": "5f1c2a3e-0d8b-4c4e-8f7a-2b6d9e1a7c33", "actor_type": "user",
        "actor_id": "9d4e6f7a-1b2c-4d3e-8f9a-0b1c2d3e4f5a", "action": "org.updated",
        "resource_type": "org", "resource_id": "42", "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0", "request_id": "req-1", "details": '{"a": 1}', "seq": "7"}
    values.update(changes)
    return tuple(values[f] for f in FIELDS)


def parse(*rows: tuple[str | None, ...]) -> list[dict[str, str]]:
    encoder = CsvEncoder()
    data = (encoder.header() + encoder.encode(rows)).decode()
    return list(csv.DictReader(io.StringIO(data, newline="")))


class TestCsvCell:
    @pytest.mark.parametrize("text", ["=SUM(A1:A2)", "+1", "-1+2", "@cmd", "\tx", "\rx",
                                      "=HYPERLINK(\"http://evil\")"])
    def test_a_cell_that_spreadsheets_would_evaluate_is_prefixed(self, text: str) -> None:
        assert csv_cell(text) == "'" + text
        assert parse(row(user_agent=text))[0]["user_agent"] == "'" + text

    @pytest.mark.parametrize("text", ["plain", "a=b", "1-2", " =x", "'quoted", ""])
    def test_other_cells_are_left_alone(self, text: str) -> None:
        assert csv_cell(text) == text
        assert parse(row(user_agent=text))[0]["user_agent"] == text

    def test_null_is_an_empty_cell(self) -> None:
        assert csv_cell(None) == ""
        assert parse(row(org_id=None))[0]["org_id"] == ""


class TestCsvEncoder:
    def test_header_then_one_row_per_entry_in_field_order(self) -> None:
        encoder = CsvEncoder()
        lines = (encoder.header() + encoder.encode([row(), row(seq="8")])).split(b"\r\n")
        assert lines[0].decode().split(",") == list(FIELDS)
        assert len(lines) == 4 and lines[-1] == b""
        assert parse(row(), row(seq="8"))[1]["seq"] == "8"

    def test_commas_quotes_and_newlines_round_trip(self) -> None:
        tricky = 'a,b "c"\r\nd'
        details = json.dumps({"note": tricky})
        parsed = parse(row(user_agent=tricky, details=details))[0]
        assert parsed["user_agent"] == tricky
        assert json.loads(parsed["details"]) == {"note": tricky}

    def test_injected_formulas_are_escaped_in_every_column(self) -> None:
        parsed = parse(row(user_agent="=cmd|' /C calc'!A0", resource_id="@SUM(1)",
                           request_id="+1", resource_type="-2", details="=1"))[0]
        assert parsed["user_agent"] == "'=cmd|' /C calc'!A0"
        assert parsed["resource_id"] == "'@SUM(1)"
        assert parsed["request_id"] == "'+1"
        assert parsed["resource_type"] == "'-2"
        assert parsed["details"] == "'=1"

    def test_chunks_share_one_buffer_without_repeating_rows(self) -> None:
        encoder = CsvEncoder()
        first, second = encoder.encode([row()]), encoder.encode([row()])
        assert first == second
        assert first.count(b"\r\n") == 1


class TestJsonlEncoder:
    def test_one_line_per_entry(self) -> None:
        lines = ['{"id": "a", "details": {"ü": "x\\ny"}}', '{"id": "b"}']
        encoder = JsonlEncoder()
        data = (encoder.header() + encoder.encode([(line,) for line in lines])).decode()
        assert data.splitlines() == lines
        assert json.loads(data.splitlines()[0])["details"] == {"ü": "x\ny"}
