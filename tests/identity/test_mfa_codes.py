"""TOTP and recovery codes as values (archomata.identity.mfa.codes): RFC 6238 with one
step of skew, each code once, recovery codes matched whatever their spelling."""

from __future__ import annotations

import re

import pyotp

from archomata.identity.mfa import codes

NOW = 1_765_000_000.0  # a fixed instant: the tests compute codes the way an app would


def code_at(secret: str, instant: float) -> str:
    return pyotp.TOTP(secret).at(instant)


def test_the_code_of_now_matches_its_step_and_one_step_either_side_is_allowed() -> None:
    secret = codes.new_secret()
    step = codes.step_at(NOW)
    assert codes.matching_step(secret, code_at(secret, NOW), after=0, now=NOW) == step
    for skew in (-1, 1):
        instant = NOW + skew * codes.STEP_SECONDS
        assert codes.matching_step(secret, code_at(secret, instant), after=0,
                                   now=NOW) == step + skew
    for too_far in (-2, 2):
        instant = NOW + too_far * codes.STEP_SECONDS
        assert codes.matching_step(secret, code_at(secret, instant), after=0, now=NOW) is None


def test_a_code_is_accepted_once_and_never_an_earlier_one_after_it() -> None:
    secret = codes.new_secret()
    used = codes.matching_step(secret, code_at(secret, NOW), after=0, now=NOW)
    assert used is not None
    assert codes.matching_step(secret, code_at(secret, NOW), after=used, now=NOW) is None
    earlier = code_at(secret, NOW - codes.STEP_SECONDS)
    assert codes.matching_step(secret, earlier, after=used, now=NOW) is None


def test_another_secret_or_a_malformed_code_matches_nothing() -> None:
    secret, other = codes.new_secret(), codes.new_secret()
    assert codes.matching_step(secret, code_at(other, NOW), after=0, now=NOW) is None
    for bad in ("", "12345", "1234567", "abcdef", "12 34 5x"):
        assert codes.matching_step(secret, bad, after=0, now=NOW) is None
    spaced = code_at(secret, NOW)
    assert codes.matching_step(secret, f"{spaced[:3]} {spaced[3:]}", after=0,
                               now=NOW) is not None


def test_secrets_are_160_bits_of_base32_and_the_uri_names_the_issuer() -> None:
    secret = codes.new_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    uri = codes.otpauth_uri(secret, "trader@example.test")
    assert uri.startswith("otpauth://totp/Archomata:trader%40example.test?")
    assert f"secret={secret}" in uri and "issuer=Archomata" in uri


def test_recovery_codes_are_ten_distinct_and_matched_whatever_their_spelling() -> None:
    made = codes.new_recovery_codes()
    assert len(made) == len(set(made)) == 10
    assert all(re.fullmatch(r"([a-z2-9]{4}-){3}[a-z2-9]{4}", c) for c in made)
    code = made[0]
    spellings = (code, code.upper(), code.replace("-", ""), code.replace("-", " "))
    assert len({codes.recovery_digest(s) for s in spellings}) == 1
    assert codes.recovery_digest(made[1]) != codes.recovery_digest(code)
    assert code not in codes.recovery_digest(code)


def test_only_ascii_digits_make_a_code_never_an_error() -> None:
    secret = codes.new_secret()
    right = code_at(secret, NOW)
    ascii_to = {ord(d): None for d in "0123456789"}
    for zero in (0xFF10, 0x0660, 0x06F0, 0x0966, 0x1D7CE):  # fullwidth, Arabic-Indic, ...
        other = right.translate({k: chr(zero + int(chr(k))) for k in ascii_to})
        assert codes.matching_step(secret, other, after=0, now=NOW) is None
    superscript = right.translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
    assert codes.matching_step(secret, superscript, after=0, now=NOW) is None
    assert codes.matching_step(secret, right, after=0, now=NOW) is not None


def test_recovery_codes_keep_only_their_ascii_letters() -> None:
    code = codes.new_recovery_codes()[0]
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c != "-" else c for c in code)
    assert codes.recovery_digest(fullwidth) != codes.recovery_digest(code)
    assert codes.recovery_digest(fullwidth) == codes.recovery_digest("")
    assert codes.recovery_digest(f"\u200d{code}😀") == codes.recovery_digest(code)
