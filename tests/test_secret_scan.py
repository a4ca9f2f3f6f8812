"""The run-wide secret scan (tests/secret_scan.py) finds what it is meant to find."""

from __future__ import annotations

import logging
import secrets

from tests import secret_scan


def test_a_remembered_secret_in_a_log_line_is_found_and_others_are_not() -> None:
    password = "pw-" + secrets.token_urlsafe(18)
    secret_scan.remember(password)
    handler = secret_scan.LogWords()
    log = logging.getLogger("archomata.test_secret_scan")
    log.addHandler(handler)
    try:
        log.warning("login", extra={"email": "someone@example.test", "note": "nothing"})
        assert secret_scan.leaked(handler.seen) == set()
        log.warning("oops", extra={"body": f'{{"password": "{password}"}}'})
        assert secret_scan.leaked(handler.seen) == {password}
    finally:
        log.removeHandler(handler)
        secret_scan.SECRETS.discard(password)


def test_keys_and_tokens_are_known_by_their_shape_and_their_words() -> None:
    key = f"amk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0." + secrets.token_urlsafe(32)
    assert secret_scan.leaked(secret_scan.words(f"X-API-Key: {key}")) == {key}
    assert secret_scan.leaked(secret_scan.words(f"Bearer {jwt}")) >= {"eyJhbGciOiJIUzI1NiJ9"}
    base64_key = "q+Zk3f0aB9mPq7RtY2sLw1eXc5VnHj8GdUoIaKpQrSt="
    secret_scan.remember(base64_key)
    try:
        assert secret_scan.leaked(secret_scan.words(f"key={base64_key}"))
    finally:
        secret_scan.SECRETS.difference_update(secret_scan.words(base64_key))
