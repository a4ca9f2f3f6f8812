"""TOTP and recovery codes as values: no storage, no HTTP.

TOTP per RFC 6238 through pyotp: SHA-1, 6 digits, 30 s steps, one step of clock skew
either way. A code is accepted once: the caller keeps the last step accepted for the
user and asks for a later one (`matching_step(..., after=last)`), so the same code in its
window, or an earlier one, is refused. A code is six ASCII digits (the space an app
groups them with aside): `str.isdigit` would also take fullwidth, Arabic-Indic or
superscript digits, which `hmac.compare_digest` refuses with a TypeError (a 500), so
anything else is simply no match. Recovery codes: 10 of 79 random bits each, shown
once, stored as SHA-256 (they are random, not chosen: a fast hash suffices, as for API
tokens), matched whatever their ASCII spelling (case, dashes, spaces).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

import pyotp

ISSUER = "Archomata"
STEP_SECONDS = 30
SKEW_STEPS = 1
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
_CODE = re.compile(r"[0-9]{6}")  # ASCII only: never `\d` or isdigit (see the module doc)


def new_secret() -> str:
    """A fresh base32 TOTP secret of 160 bits (RFC 4226's recommended length)."""
    return pyotp.random_base32(32)


def otpauth_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def step_at(now: float) -> int:
    return int(now) // STEP_SECONDS


def matching_step(secret: str, code: str, *, after: int, now: float | None = None) -> int | None:
    """The time step `code` is the TOTP of, within the skew and later than `after`, or
    None. Every candidate is compared in constant time."""
    code = code.strip().replace(" ", "")
    if not _CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = step_at(time.time() if now is None else now)
    found = None
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code) and step > after:
            found = step
    return found


def new_recovery_codes() -> list[str]:
    """Ten codes of 16 characters from 31 (79 bits), written xxxx-xxxx-xxxx-xxxx."""
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
    return codes


def recovery_digest(code: str) -> str:
    """What is stored of a recovery code: the SHA-256 of its ASCII letters and digits,
    lower-cased (any other character, whatever Unicode calls it, is dropped, so odd text
    is a wrong code, never an error)."""
    letters = "".join(c for c in code.lower() if c.isascii() and c.isalnum())
    return hashlib.sha256(letters.encode()).hexdigest()
