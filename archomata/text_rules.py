"""The text rules of the contract (§1), in one place.

No string a client sends holds NUL, another C0 control character or DEL: PostgreSQL
refuses NUL in text and jsonb (a 500 once), terminals and logs misread the rest. A
single-line value (names, emails, symbols, ids, tokens, every query and path parameter)
holds no line break or tab either: one in an org name once reached a mail's Subject
header. Multi-line values (descriptions, passwords, a broker's message) keep TAB, LF, CR.

Where they are applied: the JSON reader checks every string of a body, keys and
nested values included (archomata.web.json_io); the `Text` field (archomata.web.text) adds
the single-line rule to the body fields that have it; the params middleware checks query
and path parameters. Each refusal is a 422 naming the field. Beyond HTTP, a mail's
Subject (archomata.mail) and an OpenID provider's claims (archomata.identity.oidc) are
held to the single-line rule too: hence here, below web.
"""

from __future__ import annotations

import re

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
