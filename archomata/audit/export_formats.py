"""Audit entries as CSV or JSON Lines, a chunk of entries at a time.

CSV is written by the csv module (RFC 4180 quoting, CRLF) and made safe to open in a
spreadsheet: a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return would
be read as a formula, so it gets a leading `'` (OWASP's advice for CSV injection).
Every cell is checked, not only the free-text ones: a resource id or a user agent is
whatever a client sent. The cells arrive as text PostgreSQL rendered (the store's export
columns), so a million entries cost no Python object per cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Protocol

# The columns of a CSV export, as archomata.audit.store.CSV_COLUMNS reads them.
FIELDS = ("id", "occurred_at", "org_id", "actor_type", "actor_id", "action", "resource_type",
          "resource_id", "ip", "user_agent", "request_id", "details", "seq")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(FORMULA_START)

Row = Sequence[str | None]


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def csv_cell(value: str | None) -> str:
    """One CSV cell: empty for null, and never a formula."""
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_START) else value


class Encoder(Protocol):
    content_type: str

    def header(self) -> bytes: ...

    def encode(self, rows: Iterable[Row]) -> bytes: ...


class CsvEncoder:
    """Rows of text cells (FIELDS) to CSV."""

    content_type = "text/csv"

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)  # QUOTE_MINIMAL, "\r\n", as RFC 4180

    def _rows(self, rows: Iterable[Iterable[str]]) -> bytes:
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerows(rows)
        return self._buffer.getvalue().encode()

    def header(self) -> bytes:
        return self._rows([FIELDS])

    def encode(self, rows: Iterable[Row]) -> bytes:
        # csv_cell, inlined: this runs for every cell of a million-entry export.
        return self._rows([("'" + c if c[:1] in _FORMULA_FIRST else c) if c else ""
                           for c in row] for row in rows)


class JsonlEncoder:
    """Rows whose first column is one JSON text (PostgreSQL built it) to JSON Lines."""

    content_type = "application/x-ndjson"

    def header(self) -> bytes:
        return b""

    def encode(self, rows: Iterable[Row]) -> bytes:
        return "".join(f"{row[0]}\n" for row in rows).encode()


def encoder_for(export_format: ExportFormat) -> Encoder:
    return CsvEncoder() if export_format is ExportFormat.CSV else JsonlEncoder()
