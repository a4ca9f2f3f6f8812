"""Access tokens: the cache of verified claims keeps every refusal `verify` makes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from archomata.access.principal import PlatformRole
from archomata.config import Config
from archomata.errors import Unauthorized
from archomata.identity import tokens


def _issue(config: Config, now: float | None = None) -> tuple[str, tokens.Claims]:
    return tokens.issue(config, user_id=uuid.uuid4(), org_id=uuid.uuid4(),
                        session_id=uuid.uuid4(), platform_role=PlatformRole.USER,
                        issued_us=int((now or time.time()) * 1_000_000), now=now)


def _token(config: Config, now: float | None = None) -> str:
    return _issue(config, now)[0]


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens that went through the full check (PyJWT), in order."""
    seen: list[str] = []
    real = tokens.verify

    def counting(config: Config, token: str) -> Any:
        seen.append(token)
        return real(config, token)

    monkeypatch.setattr(tokens, "verify", counting)
    return seen


class TestVerifiedTokens:
    def test_a_token_is_checked_once_then_served_from_the_cache(
            self, config: Config, checks: list[str]) -> None:
        cache = tokens.VerifiedTokens(config)
        token, issued = _issue(config)
        assert cache.verify(token) == issued
        assert cache.verify(token) == issued
        assert checks == [token]

    def test_a_tampered_copy_of_a_cached_token_is_refused(
            self, config: Config, checks: list[str]) -> None:
        cache = tokens.VerifiedTokens(config)
        token = _token(config)
        cache.verify(token)
        tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        with pytest.raises(Unauthorized) as refused:
            cache.verify(tampered)
        assert refused.value.code == "token_invalid"
        assert checks == [token, tampered]

    async def test_a_cached_token_past_its_expiry_is_refused(self, config: Config) -> None:
        cache = tokens.VerifiedTokens(config)
        token, issued = _issue(config, now=time.time() - config.access_token_ttl_seconds + 2)
        assert cache.verify(token) == issued  # valid for one or two more seconds
        await asyncio.sleep(issued.expires_at - time.time() + 0.1)
        with pytest.raises(Unauthorized) as refused:
            cache.verify(token)
        assert refused.value.code == "token_expired"

    def test_the_cache_is_bounded_and_drops_the_oldest(
            self, config: Config, checks: list[str]) -> None:
        cache = tokens.VerifiedTokens(config, max_entries=2)
        first, second, third = _token(config), _token(config), _token(config)
        for token in (first, second, third, third, second, first):
            cache.verify(token)
        # `first` was dropped for `third`, so it is checked again; `second` and `third`
        # were served from the cache.
        assert checks == [first, second, third, first]
