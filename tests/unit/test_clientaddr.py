"""The source address: the peer, or what trusted proxies say, never what a client writes."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.clientaddr import MAX_HOPS, client_address, parse_address, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


XFF = "X-Forwarded-For"


@pytest.mark.parametrize(
    ("peer", "given", "source"),
    [
        # the example of the documentation: the right-most untrusted hop
        ("10.0.0.5", [(XFF, "198.51.100.9, 203.0.113.7")], "203.0.113.7"),
        # trusted hops (a second proxy inside the network) are skipped
        ("10.0.0.5", [(XFF, "198.51.100.9, 203.0.113.7, 10.1.2.3")], "203.0.113.7"),
        ("10.0.0.5", [(XFF, "203.0.113.7, 192.168.1.1, 10.9.9.9")], "203.0.113.7"),
        # several header lines are one list, in order
        ("10.0.0.5", [(XFF, "198.51.100.9"), (XFF, "203.0.113.7")], "203.0.113.7"),
        # no header: the peer
        ("10.0.0.5", [], "10.0.0.5"),
        # an untrusted peer's headers are ignored
        ("203.0.113.50", [(XFF, "198.51.100.9")], "203.0.113.50"),
        ("203.0.113.50", [("Forwarded", "for=198.51.100.9")], "203.0.113.50"),
        # every hop trusted: the left-most
        ("10.0.0.5", [(XFF, "10.3.3.3, 10.2.2.2")], "10.3.3.3"),
        # ports, brackets, IPv6, IPv4-mapped IPv6: normalized
        ("10.0.0.5", [(XFF, "203.0.113.7:51234")], "203.0.113.7"),
        ("10.0.0.5", [(XFF, "[2001:DB8::1]:443")], "2001:db8::1"),
        ("10.0.0.5", [(XFF, "2001:db8:0:0::1")], "2001:db8::1"),
        ("10.0.0.5", [(XFF, "::ffff:203.0.113.7")], "203.0.113.7"),
        ("fd00::1", [(XFF, "203.0.113.7")], "203.0.113.7"),
        ("::ffff:10.0.0.5", [(XFF, "203.0.113.7")], "203.0.113.7"),
        # malformed hops stop the walk at the last address believed
        ("10.0.0.5", [(XFF, "garbage")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "unknown")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "203.0.113.7, garbage")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "203.0.113.7, , 10.1.1.1")], "10.1.1.1"),
        ("10.0.0.5", [(XFF, "203.0.113.7, 10.1.1.1, fe80::1%eth0")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "[2001:db8::1")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "[2001:db8::1]x")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "203.0.113.7\x00")], "10.0.0.5"),
        ("10.0.0.5", [(XFF, "999.1.1.1")], "10.0.0.5"),
        # what the client wrote left of the untrusted hop never matters
        ("10.0.0.5", [(XFF, "<script>, 1.1.1.1:x:y, 203.0.113.7")], "203.0.113.7"),
        # RFC 7239 Forwarded, used when there is no X-Forwarded-For
        ("10.0.0.5", [("Forwarded", "for=198.51.100.9, for=203.0.113.7")], "203.0.113.7"),
        (
            "10.0.0.5",
            [("Forwarded", 'for="[2001:db8:cafe::17]:4711";proto=https')],
            "2001:db8:cafe::17",
        ),
        ("10.0.0.5", [("Forwarded", "proto=https;For=203.0.113.7;by=10.0.0.5")], "203.0.113.7"),
        ("10.0.0.5", [("Forwarded", 'for=203.0.113.7, for="10.1.1.1"')], "203.0.113.7"),
        ("10.0.0.5", [("Forwarded", "for=unknown")], "10.0.0.5"),
        ("10.0.0.5", [("Forwarded", "for=_hidden")], "10.0.0.5"),
        ("10.0.0.5", [("Forwarded", "proto=https")], "10.0.0.5"),
        ("10.0.0.5", [("Forwarded", 'for="203.0.113.9,10.1.1.1"')], "10.0.0.5"),
        # X-Forwarded-For is read first
        ("10.0.0.5", [("Forwarded", "for=198.51.100.1"), (XFF, "203.0.113.7")], "203.0.113.7"),
    ],
)
def test_source_address(peer, given, source):
    assert client_address(peer, headers(*given), TRUSTED) == source


def test_without_trusted_proxies_the_peer_is_the_source():
    assert client_address("10.0.0.5", headers((XFF, "203.0.113.7")), ()) == "10.0.0.5"


def test_no_peer_is_none():
    assert client_address(None, headers((XFF, "203.0.113.7")), TRUSTED) is None


def test_a_long_chain_is_walked_only_so_far():
    chain = ", ".join(["203.0.113.7"] + ["10.1.1.1"] * (MAX_HOPS + 5))
    assert client_address("10.0.0.5", headers((XFF, chain)), TRUSTED) == "10.1.1.1"
    chain = ", ".join(["203.0.113.7"] + ["10.1.1.1"] * (MAX_HOPS - 1))
    assert client_address("10.0.0.5", headers((XFF, chain)), TRUSTED) == "203.0.113.7"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("1.2.3.4", "1.2.3.4"), (' "1.2.3.4:80" ', "1.2.3.4"), ("[::1]", "::1"), ("x", None)],
)
def test_parse_address(text, parsed):
    addr = parse_address(text)
    assert (str(addr) if addr else None) == parsed


def test_networks_are_strict():
    assert [str(n) for n in parse_networks([" 10.0.0.0/8", "192.0.2.1"])] == [
        "10.0.0.0/8",
        "192.0.2.1/32",
    ]
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.1/8"])


def test_only_short_hops_are_remembered():
    from gateway import clientaddr

    client_address("10.0.0.5", headers(), TRUSTED)  # the peer is remembered
    before = clientaddr._classify_cached.cache_info().currsize
    long_hop = "x" * 200
    assert client_address("10.0.0.5", headers((XFF, long_hop)), TRUSTED) == "10.0.0.5"
    assert clientaddr._classify_cached.cache_info().currsize == before
    client_address("10.0.0.5", headers((XFF, "203.0.113.99")), TRUSTED)
    assert clientaddr._classify_cached.cache_info().currsize == before + 1
