"""The one JSON reader: orjson, with the limits it lacks."""

from __future__ import annotations

import pytest

from archomata.errors import ApiError
from archomata.web.json_io import MAX_DEPTH, parse_json


def refusal(raw: bytes) -> tuple[int, str, dict[str, list[str]] | None]:
    with pytest.raises(ApiError) as raised:
        parse_json(raw)
    return raised.value.status, raised.value.code, raised.value.errors


class TestParseJson:
    @pytest.mark.parametrize("raw", [
        b"%d" % (2**64 - 1), b"%d" % -(2**63), b"9300000000000000000.5", b"[1e20]",
        b'{"a": "\\\\u0000 and \\\\b"}', b'{"a": "tab\\t, line\\n, return\\r"}',
        b'"[1, 123456789012345678901234567890]"', b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b'{"a": "' + b"[" * 100 + b'"}'])
    def test_what_is_read(self, raw: bytes) -> None:
        parse_json(raw)

    @pytest.mark.parametrize(("raw", "code"), [
        (b"%d" % 2**64, "number_out_of_range"), (b"%d" % -(2**63 + 1), "number_out_of_range"),
        (b'{"a": [0, ' + b"7" * 30 + b"]}", "number_out_of_range"),
        (b"1" * 4301, "number_out_of_range"), (b"1e400", "number_out_of_range"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "json_too_deep"),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, "json_too_deep"),
        (b'"\\ud800"', "malformed_json"), (b"\xff", "malformed_json"), (b"", "malformed_json"),
    ])
    def test_what_is_a_400(self, raw: bytes, code: str) -> None:
        assert refusal(raw)[:2] == (400, code)

    @pytest.mark.parametrize(("raw", "field"), [
        (b'{"a": "x\\u0000"}', "a"), (b'{"a": [1, {"b": "\\u001f"}]}', "a.1.b"),
        (b'{"a": "\\\\\\u0000"}', "a"), (b'{"a": "\x7f"}', "a"), (b'{"a": "\\f"}', "a"),
        (b'{"k\\u0000": 1}', "_body"), (b'"\\b"', "_body"),
    ])
    def test_a_control_character_is_a_422_naming_its_path(self, raw: bytes,
                                                           field: str) -> None:
        status, _, errors = refusal(raw)
        assert status == 422
        assert errors is not None and list(errors) == [field]
