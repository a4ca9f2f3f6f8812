"""Wrong secrets for a known API key id stop costing bcrypt once the id is under attack,
shared by every instance through Redis, while the agent that holds the key gets in."""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from typing import Any

import pytest

from archomata import keys
from archomata.app import create_app
from archomata.bridge.api_keys import API_KEYS, KEY_FREE_TRIES, parse
from archomata.config import Config
from tests.factories import agent_with_key, signed_up

HEARTBEAT = "/api/v1/bridge/heartbeat"


@pytest.fixture
def proxied(config: Config) -> Config:
    """Loopback is a trusted proxy, so X-Forwarded-For plays the client addresses."""
    return dataclasses.replace(config, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))


def wrong_key(key: str) -> str:
    parsed = parse(key)
    assert parsed is not None
    return f"amk_{parsed[0]}_{secrets.token_urlsafe(32)}"


async def beat(client: Any, key: str, address: str | None = None) -> tuple[int, str | None]:
    headers = {"X-API-Key": key}
    if address is not None:
        headers["X-Forwarded-For"] = address
    response = await client.post(HEARTBEAT, json={"version": "1.0.0"}, headers=headers)
    body = await response.json()
    if response.status == 429:
        assert int(response.headers["Retry-After"]) >= 1
    return response.status, body.get("code")


class TestKeyIdThrottle:
    async def test_wrong_secrets_stop_costing_bcrypt_and_the_cached_key_keeps_working(
            self, aiohttp_client: Any, proxied: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(proxied))
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        assert await beat(client, key) == (200, None)  # verified once, now cached
        hasher = client.app[keys.PASSWORDS]
        before = hasher.calls
        answers = []
        for attempt in range(KEY_FREE_TRIES + 20):
            answers.append(await beat(client, wrong_key(key), f"203.0.113.{attempt % 4 + 1}"))
            if attempt % 5 == 0:
                assert await beat(client, key) == (200, None)
        assert answers[:KEY_FREE_TRIES] == [(401, "invalid_api_key")] * KEY_FREE_TRIES
        assert set(answers[KEY_FREE_TRIES:]) == {(429, "api_key_throttled")}
        assert hasher.calls - before == KEY_FREE_TRIES  # the cached key cost none either

    async def test_the_throttle_is_shared_by_instances_and_spares_the_keys_own_address(
            self, aiohttp_client: Any, proxied: Config, mail_sink: Any) -> None:
        first = await aiohttp_client(create_app(proxied))
        admin = await signed_up(first, mail_sink)
        _, key = await agent_with_key(first, admin)
        assert await beat(first, key, "198.51.100.20") == (200, None)
        for attempt in range(KEY_FREE_TRIES):
            assert await beat(first, wrong_key(key), f"203.0.113.{attempt}") == \
                (401, "invalid_api_key")

        # Another instance, with nothing cached: the attack is known there already.
        second = await aiohttp_client(create_app(proxied))
        hasher = second.app[keys.PASSWORDS]
        before = hasher.calls
        assert await beat(second, wrong_key(key), "203.0.113.99") == (429, "api_key_throttled")
        # The right key from an address it was never proven from waits like the attacker...
        assert await beat(second, key, "192.0.2.1") == (429, "api_key_throttled")
        assert hasher.calls == before
        # ...but from the agent's own address it gets in, one bcrypt, then from the cache.
        assert await beat(second, key, "198.51.100.20") == (200, None)
        assert await beat(second, key, "192.0.2.1") == (200, None)
        assert hasher.calls == before + 1

    async def test_a_valid_key_missing_the_cache_again_and_again_never_trips_it(
            self, aiohttp_client: Any, proxied: Config, mail_sink: Any) -> None:
        client = await aiohttp_client(create_app(proxied))
        admin = await signed_up(client, mail_sink)
        _, key = await agent_with_key(client, admin)
        for _ in range(KEY_FREE_TRIES * 2):
            client.app[API_KEYS].cache.clear()  # a restart, another instance...
            assert await beat(client, key, f"198.51.100.{secrets.randbelow(200)}") == (200, None)
        for _ in range(KEY_FREE_TRIES):  # each match gave its try back
            assert await beat(client, wrong_key(key), "203.0.113.7") == (401, "invalid_api_key")
        assert await beat(client, wrong_key(key), "203.0.113.7") == (429, "api_key_throttled")
