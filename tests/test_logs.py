"""The two log formats: JSON lines in production, one readable line in development."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from archomata import logs


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("archomata.access", logging.INFO, __file__, 1, "request", (),
                               None)
    record.__dict__.update(extra)
    return record


def test_development_lines_are_readable_with_the_same_fields() -> None:
    record = _record(method="GET", route="/api/v1/me", status=200)
    line = logs.HumanFormatter().format(record)
    assert not line.startswith("{") and "\n" not in line
    assert line.endswith("INFO  archomata.access  request method=GET route=/api/v1/me status=200")
    entry = json.loads(logs.JsonFormatter().format(record))
    assert (entry["method"], entry["route"], entry["status"]) == ("GET", "/api/v1/me", 200)


def test_an_exception_follows_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    first, *rest = logs.HumanFormatter().format(record).splitlines()
    assert first.endswith("archomata.access  request")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"


@pytest.mark.parametrize(("human", "formatter"), [(False, logs.JsonFormatter),
                                                  (True, logs.HumanFormatter)])
def test_configure_picks_the_format(human: bool, formatter: type[logging.Formatter]) -> None:
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    try:
        logs.configure(human=human)
        [handler] = root.handlers
        assert type(handler.formatter) is formatter
    finally:
        root.handlers[:], root.level = kept, level
