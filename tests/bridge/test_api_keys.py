"""API key format and the verified-key cache, on their own."""

from __future__ import annotations

import uuid

from archomata.bridge.api_keys import (
    CACHE_TTL_SECONDS,
    REVOKED_MARKER_SECONDS,
    AgentIdentity,
    KeyCache,
    new_key,
    parse,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def identity(key_id: str = "0123456789abcdef") -> AgentIdentity:
    return AgentIdentity(uuid.uuid4(), uuid.uuid4(), key_id)


class TestFormat:
    def test_new_keys_parse_back_and_are_unique(self) -> None:
        key_id, secret, key = new_key()
        assert key == f"amk_{key_id}_{secret}"
        assert parse(key) == (key_id, secret)
        assert len({new_key()[2] for _ in range(100)}) == 100

    def test_malformed_keys_do_not_parse(self) -> None:
        _, _, key = new_key()
        for bad in ("", key[:-1], key + "A", key.replace("amk_", "amx_"), key.upper(),
                    " " + key, key.replace("_", "-", 1), f"amk_{'g' * 16}_{'A' * 43}"):
            assert parse(bad) is None, bad

    def test_the_revocation_marker_outlives_any_cache_entry(self) -> None:
        assert REVOKED_MARKER_SECONDS > CACHE_TTL_SECONDS


class TestKeyCache:
    def test_an_entry_dies_ttl_after_its_lookup_began(self) -> None:
        clock = Clock()
        cache = KeyCache(ttl=10, clock=clock)
        stamp = cache.stamp()
        clock.now += 4  # bcrypt took a while
        cache.put(b"d", identity(), stamp)
        clock.now += 5.9
        assert cache.get(b"d") is not None
        clock.now += 0.2
        assert cache.get(b"d") is None
        assert len(cache) == 0

    def test_bounded_least_recently_used_first(self) -> None:
        cache = KeyCache(max_entries=2, clock=Clock())
        for digest in (b"a", b"b"):
            cache.put(digest, identity(), cache.stamp())
        assert cache.get(b"a") is not None
        cache.put(b"c", identity(), cache.stamp())
        assert (cache.get(b"a") is not None, cache.get(b"b"), cache.get(b"c") is not None) == \
            (True, None, True)

    def test_revoking_a_key_drops_it_and_refuses_lookups_that_started_before(self) -> None:
        cache = KeyCache(clock=Clock())
        cache.put(b"a", identity("aaaaaaaaaaaaaaaa"), cache.stamp())
        cache.put(b"b", identity("bbbbbbbbbbbbbbbb"), cache.stamp())
        racing = cache.stamp()
        cache.drop_key_id("aaaaaaaaaaaaaaaa")
        assert cache.get(b"a") is None and cache.get(b"b") is not None
        cache.put(b"a", identity("aaaaaaaaaaaaaaaa"), racing)
        assert cache.get(b"a") is None
        cache.clear()
        assert len(cache) == 0
