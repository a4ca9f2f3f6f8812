"""Small builders for test data; every call makes something new."""

from __future__ import annotations

import secrets


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{secrets.token_hex(6)}@example.test"


def strong_password() -> str:
    return "pw-" + secrets.token_urlsafe(18)
