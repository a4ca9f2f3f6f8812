"""The marshmallow fields that hold a body to the text rules (archomata.text_rules)."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, fields

from archomata.text_rules import text_problem


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
