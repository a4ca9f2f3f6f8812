"""The client address: the peer, or what a trusted proxy says it saw."""

from __future__ import annotations

import ipaddress

import pytest

from archomata.http.middlewares.client_ip import client_ip_of, parse_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ff::/48"))


class TestClientIp:
    def test_untrusted_peer_is_the_client_whatever_it_forwards(self) -> None:
        assert client_ip_of("198.51.100.7", ["203.0.113.1"], PROXIES) == "198.51.100.7"

    def test_without_trusted_proxies_forwarded_for_is_ignored(self) -> None:
        assert client_ip_of("10.0.0.1", ["203.0.113.1"], ()) == "10.0.0.1"

    @pytest.mark.parametrize(("forwarded", "client"), [
        (["203.0.113.1"], "203.0.113.1"),
        (["198.51.100.9, 203.0.113.1"], "203.0.113.1"),  # the left part is the client's own
        (["203.0.113.1, 10.1.1.1, 10.2.2.2"], "203.0.113.1"),
        (["203.0.113.1", "10.1.1.1"], "203.0.113.1"),  # several header lines
        (["203.0.113.1:4711"], "203.0.113.1"),
        (["[2001:db8::5]:443"], "2001:db8::5"),
        (["::ffff:203.0.113.1"], "203.0.113.1"),
        (["10.3.3.3, 10.1.1.1"], "10.3.3.3"),  # all ours: the furthest known
        ([], "10.0.0.1"),
    ])
    def test_trusted_peer_forwarded_for_is_walked_from_the_right(
            self, forwarded: list[str], client: str) -> None:
        assert client_ip_of("10.0.0.1", forwarded, PROXIES) == client

    @pytest.mark.parametrize("forwarded", [["203.0.113.1, garbage"], ["unknown"], [""],
                                           ["203.0.113.1,,10.1.1.1"]])
    def test_invalid_entry_falls_back_to_the_peer(self, forwarded: list[str]) -> None:
        assert client_ip_of("10.0.0.1", forwarded, PROXIES) == "10.0.0.1"

    def test_ipv6_peer_in_trusted_range(self) -> None:
        assert client_ip_of("2001:db8:ff::1", ["2001:db8:1::9"], PROXIES) == "2001:db8:1::9"

    def test_unparseable_peer_is_kept(self) -> None:
        assert client_ip_of(None, ["203.0.113.1"], PROXIES) == "unknown"
        assert parse_ip("not-an-ip") is None
