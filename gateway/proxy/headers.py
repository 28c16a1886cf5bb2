"""Clean the headers that cross the gateway, in both directions.

Takes the client's request headers (`to_upstream`) or upstream's response
headers (`to_client`) and returns a new multidict without the headers that
must not cross. Matching is case-insensitive and is done again after mapping
`_` to `-`, because some servers treat `X_Foo` as `X-Foo`; a name that only
reads as a message-framing header that way (`Content_Length`,
`Transfer_Encoding`) never crosses, so no server behind the gateway can frame a
body by a different header than the gateway and aiohttp did. Nothing here
rejects a request; the caller adds what the gateway itself sends.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.canonical import header_key
from gateway.memo import Memo

Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# RFC 9110 §7.6.1: "Intermediaries MUST parse a received Connection header field
# before a message is forwarded and, for each connection-option in this field,
# remove any header or trailer field(s) from the message with the same name as
# the connection-option, and then remove the Connection header field itself".
# The section also names Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and
# Upgrade; Trailer is hop-by-hop since RFC 2616 §13.5.1.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# SECURITY: the client's own credentials never reach Azure DevOps: the gateway
# injects the upstream credential itself. Host is upstream's (aiohttp sets it
# from the URL). Expect is answered by the gateway's own server.
CLIENT_ONLY = frozenset({"authorization", "cookie", "host", "expect"})

# SECURITY: how a message's body is delimited. The real ones are aiohttp's to
# read and write; one spelled with `_` is dropped in both directions (a server
# that reads `_` as `-` would see Content-Length beside Transfer-Encoding).
FRAMING = frozenset({"content-length", "transfer-encoding"})

# Method-override headers are authorized as the method they name and the
# request is sent upstream with that method, so the header itself is dropped.
METHOD_OVERRIDE = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})

# Headers the gateway sets itself toward upstream; a client's copy is dropped.
GATEWAY_SET = frozenset({"x-request-id", "x-tfs-fedauthredirect"})

# SECURITY: upstream cookies are a session of the injected identity, not of the
# client; Alt-Svc would advertise Azure DevOps' own endpoints for the gateway's
# origin. The gateway sets its own X-Request-ID on every answer.
UPSTREAM_ONLY = frozenset({"set-cookie", "set-cookie2", "alt-svc", "x-request-id"})


def normalize(name: str) -> str:
    """A header name written in a value (a `Connection` token) as names compare:
    `header_key`, spaces around it ignored."""
    return header_key(name.strip())


def connection_options(headers: Headers) -> frozenset[str]:
    """Every header name listed in `Connection` (and the legacy Proxy-Connection)."""
    values = headers.getall("Connection", []) + headers.getall("Proxy-Connection", [])
    if len(values) == 1:
        return _options[values[0]]
    return frozenset().union(*(_options[value] for value in values))


def _listed(value: str) -> frozenset[str]:
    return frozenset(normalize(token) for token in value.split(",") if token.strip())


MAX_NAMES = 1024  # header names (or Connection values) remembered, each table
# Connection value -> the names it lists: nearly always `keep-alive` or `close`.
_options: Memo[str, frozenset[str]] = Memo(_listed, size=MAX_NAMES)


class _Direction(Memo[str, str | None]):
    """What one direction drops, as the verdict on each header name (remembered
    for the names seen): the name as names compare (`header_key`), or None when
    the direction drops it whatever `Connection` lists."""

    def __init__(self, banned: frozenset[str]) -> None:
        super().__init__(self._judge, size=MAX_NAMES)
        self.banned = banned

    def _judge(self, name: str) -> str | None:
        key = header_key(name)
        # a framing header spelled with `_` never crosses, either way
        dropped = ("_" in name and key in FRAMING) or key in self.banned
        return None if dropped or key.startswith("proxy-") else key

    def clean(self, headers: Headers) -> CIMultiDict[str]:
        # A copy less the names dropped: most messages have none to drop.
        out = headers.copy()
        listed: frozenset[str] = frozenset()
        if "Connection" in headers or "Proxy-Connection" in headers:
            listed = connection_options(headers)
        for name in headers.keys():
            key = self[name]
            if key is None or key in listed:
                out.popall(name, None)
        return out


_TO_UPSTREAM = _Direction(HOP_BY_HOP | CLIENT_ONLY | METHOD_OVERRIDE | GATEWAY_SET)
_TO_CLIENT = _Direction(HOP_BY_HOP | UPSTREAM_ONLY)
_TO_CLIENT_REWRITTEN = _Direction(HOP_BY_HOP | UPSTREAM_ONLY | {"content-length"})


def to_upstream(headers: Headers) -> CIMultiDict[str]:
    """The client's headers that may be sent to Azure DevOps.

    Drops hop-by-hop headers and those named in `Connection`, the client's
    `Authorization` and `Cookie`, every `Proxy-*`, the method-override headers
    and the ones the gateway sets itself. `Content-Length` stays: the body is
    streamed through unchanged.
    """
    return _TO_UPSTREAM.clean(headers)


def to_client(headers: Headers, *, body_rewritten: bool = False) -> CIMultiDict[str]:
    """Upstream's response headers that may be sent to the client.

    Drops hop-by-hop headers and those named in `Connection`, `Proxy-*`
    (Proxy-Authenticate is hop-by-hop for the gateway's own hop), cookies,
    `Alt-Svc`, and `Content-Length` when the body is rewritten. Azure DevOps'
    own headers (ActivityId, X-TFS-*, X-VSS-*, X-RateLimit-*, Retry-After,
    x-ms-continuationtoken, ...) pass.
    """
    return (_TO_CLIENT_REWRITTEN if body_rewritten else _TO_CLIENT).clean(headers)
