"""The client's address: the TCP peer, or what trusted proxies say it was.

Takes the peer address of the connection, the request headers and
`listen.trusted_proxies` (CIDRs). Returns the address the failed-authentication
throttle counts and the audit line records as `source`:

- a peer outside the trusted networks (or no trusted networks configured):
  the peer, whatever `X-Forwarded-For` or `Forwarded` it sends;
- a trusted peer: the right-most hop of `X-Forwarded-For` (RFC 7239
  `Forwarded: for=...` when there is no `X-Forwarded-For`) that is not itself
  trusted, walking from the right, since each proxy appends the address it
  received the connection from and only what trusted proxies appended can be
  believed (`"198.51.100.9, 203.0.113.7"` via a trusted peer gives
  203.0.113.7; 198.51.100.9 may be anything that client wrote);
- every hop trusted: the left-most one;
- no header: the peer;
- a hop that is not an address (`unknown`, an obfuscated `_hidden`, garbage,
  more than MAX_HOPS hops): the walk stops at the last address it believed, so
  nothing a client writes ever becomes its source.

Addresses come back normalized (`str(ip_address(...))`, ports and brackets
dropped, IPv4-mapped IPv6 as IPv4), so one client has one spelling.

SECURITY: a trusted proxy must append to (or overwrite) the header it uses;
one that writes only `Forwarded` must also drop a client's `X-Forwarded-For`,
which is read first (the header ingress-nginx, Envoy, HAProxy and the cloud
load balancers write).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence

from multidict import MultiMapping

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOPS = 32  # hops examined from the right; a longer chain stops the walk there

_FOR = re.compile(r'(?:^|;)\s*for\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)', re.IGNORECASE)


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """`listen.trusted_proxies` as networks (a bare address is its /32 or /128)."""
    return tuple(ipaddress.ip_network(c.strip(), strict=True) for c in cidrs)


def parse_address(text: str) -> IPAddress | None:
    """One hop as an address: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]:443`,
    `2001:db8::1`, quoted or not; None for anything else."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and text[end + 1] != ":"):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    if "%" in text:  # a zone index says nothing about which host it is
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def forwarded_hops(headers: MultiMapping[str]) -> list[str]:
    """The hops the headers list, left (the original client) to right (the nearest proxy)."""
    xff = headers.getall("X-Forwarded-For", ())
    if xff:
        return [hop for line in xff for hop in line.split(",")]
    fwd = headers.getall("Forwarded", ())
    hops: list[str] = []
    for line in fwd:
        for element in _split_elements(line):
            found = _FOR.search(element)
            # an element without for= says nothing about who sent it: stop there
            hops.append(found.group(1).replace('\\"', '"') if found else "")
    return hops


def _split_elements(line: str) -> list[str]:
    """A `Forwarded` value split at the commas outside quoted strings."""
    elements: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            elements.append(line[start:i])
            start = i + 1
    elements.append(line[start:])
    return elements


def _trusted(addr: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def _classify(text: str, networks: tuple[IPNetwork, ...]) -> tuple[str | None, bool]:
    """(the hop's normalized address or None, whether it is a trusted proxy)."""
    addr = parse_address(text)
    if addr is None:
        return None, False
    return str(addr), _trusted(addr, networks)


# The same few addresses (the proxies, busy clients) come again and again, and
# parsing one costs several times a dictionary lookup. Only short texts are kept,
# so the cache stays small whatever clients write.
_classify_cached = functools.lru_cache(maxsize=4096)(_classify)
_CACHED_LENGTH = 64


def _hop(text: str, networks: tuple[IPNetwork, ...]) -> tuple[str | None, bool]:
    if len(text) <= _CACHED_LENGTH:
        return _classify_cached(text, networks)
    return _classify(text, networks)


def client_address(
    peer: str | None, headers: MultiMapping[str], networks: tuple[IPNetwork, ...]
) -> str | None:
    """The request's source address (see the module docstring); None without a peer."""
    if not networks or peer is None:
        return peer
    believed, trusted = _hop(peer, networks)
    if believed is None or not trusted:
        return peer
    hops = forwarded_hops(headers)
    for hop in reversed(hops[-MAX_HOPS:]):
        addr, trusted = _hop(hop, networks)
        if addr is None:
            break
        believed = addr
        if not trusted:
            break
    return believed
