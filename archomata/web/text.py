"""The text rules of the contract (§1), in one place.

No string a client sends holds NUL, another C0 control character or DEL: PostgreSQL
refuses NUL in text and jsonb (a 500 once), terminals and logs misread the rest. A
single-line value (names, emails, symbols, ids, tokens, every query and path parameter)
holds no line break or tab either: one in an org name once reached a mail's Subject
header. Multi-line values (descriptions, passwords, a broker's message) keep TAB, LF, CR.

Where they are applied: the JSON reader checks every string of a body, keys and
nested values included (archomata.web.json_io); the `Text` field adds the single-line rule
to the body fields that have it; the params middleware checks query and path parameters.
Each refusal is a 422 naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, fields

# C0 but TAB, LF and CR; and DEL.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Every C0 and C1 control, DEL, and the Unicode line and paragraph separators (which
# str.splitlines, and with it the email package, treats as line breaks).
NOT_SINGLE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
CONTROL_MESSAGE = "Must not contain control characters."
SINGLE_LINE_MESSAGE = "Must be one line, without control characters or tabs."


def text_problem(value: str, *, multiline: bool) -> str | None:
    """What is wrong with `value` under the text rules, or None."""
    if multiline:
        return CONTROL_MESSAGE if CONTROL.search(value) else None
    return SINGLE_LINE_MESSAGE if NOT_SINGLE_LINE.search(value) else None


class Text(fields.String):
    """A string under the text rules: single-line unless `multiline=True`."""

    def __init__(self, *, multiline: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.multiline = multiline

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        problem = text_problem(text, multiline=self.multiline)
        if problem:
            raise ValidationError(problem)
        return text


class EmailText(Text, fields.Email):
    """An email address: single-line text that also passes marshmallow's email check
    (and is documented with `format: email`)."""


class QueryInteger(fields.Integer):
    """An integer in a query string: ASCII digits only. marshmallow's Integer reads any
    text `int()` reads, and that takes fullwidth or Arabic-Indic digits (and surrounding
    space): another spelling of a number is a 422, as any other non-number is."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,19}", value):
            raise self.make_error("invalid")
        result: int = super()._deserialize(value, attr, data, **kwargs)
        return result
