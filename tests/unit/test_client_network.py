"""Rate limits count an IPv6 client by its /64: a subscriber line holds a whole /64, so counting single
addresses would let one client spread guesses or sign-ups over 2^64 of them."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from newsletter.web.deps import client_network

v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address).filter(lambda ip: ip.ipv4_mapped is None)


@given(v6, st.integers(0, 2**64 - 1))
def test_every_address_of_one_64_is_one_client(ip: ipaddress.IPv6Address, host: int) -> None:
    neighbour = ipaddress.IPv6Address((int(ip) & ~(2**64 - 1)) | host)
    if neighbour.ipv4_mapped is None:
        assert client_network(str(ip)) == client_network(str(neighbour))


@given(v6, v6)
def test_different_64s_are_different_clients(a: ipaddress.IPv6Address, b: ipaddress.IPv6Address) -> None:
    same_net = int(a) >> 64 == int(b) >> 64
    assert (client_network(str(a)) == client_network(str(b))) == same_net


def test_ipv4_mapped_addresses_and_anything_else_are_left_as_they_are() -> None:
    assert client_network("203.0.113.9") == "203.0.113.9"
    assert client_network("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_network("unknown") == "unknown"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
