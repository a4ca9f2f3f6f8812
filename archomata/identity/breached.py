"""Passwords found in public breach corpora, refused as new passwords (422
`password_breached`) on registration, change, reset, invitation acceptance and
`create-admin`: offline, from the bundled list (data/README.md says which and under what
licence).

The list is read once per process. Only its entries a password could equal once the length
rule has passed (12 to 128 characters) are kept, lower-cased, in a frozenset: one hash
lookup per check, whatever the list's size, and a capitalised variant ("Qwerty123456")
is refused with its original.
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from archomata.errors import ValidationFailed
from archomata.identity.passwords import MAX_LENGTH, MIN_LENGTH

LIST = Path(__file__).with_name("data") / "breached-passwords.txt.gz"


def bundled() -> list[str]:
    """Every password of the bundled list, in its order (most common first)."""
    with gzip.open(LIST, "rt", encoding="utf-8", newline="\n") as lines:
        return [line.rstrip("\n") for line in lines]


@functools.cache
def _known() -> frozenset[str]:
    return frozenset(p.lower() for p in bundled() if MIN_LENGTH <= len(p) <= MAX_LENGTH)


def is_breached(password: str) -> bool:
    return password.lower() in _known()


def refuse_breached(password: str, field: str = "password") -> None:
    """ValidationFailed `password_breached` for a password of the list (never echoed)."""
    if is_breached(password):
        raise ValidationFailed(
            "This password appears in public lists of breached passwords: choose another.",
            code="password_breached", errors={field: ["Found in a list of breached passwords."]})


def load() -> None:
    """Reads the list now (at start-up), not on the first password that needs it."""
    _known()
