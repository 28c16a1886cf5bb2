"""Stage 0: canonicalize the request target and the method.

Takes the raw request target (path and query exactly as received) and returns
the upstream host key and the one canonical path every later stage sees and
that is sent upstream; takes the method and headers and returns the method to
authorize. Rejects (400) anything whose meaning could differ between the gateway
and Azure DevOps:

- targets that are not origin-form (`http://host/...`, `host:443`, `*`), or
  carry a fragment, raw spaces, control or non-ASCII characters, or `\\`;
- invalid percent-encodings, double encodings (`%252e`), encoded `/`, `\\` and NUL, encoded control
  characters, percent-encoded bytes that are not valid UTF-8 (overlong forms
  such as `%C0%AE` included);
- dot segments, plain or encoded (`.`, `..`, `%2e%2E`, `..;/`), and empty
  segments (`//`);
- over-long targets and paths with too many segments;
- headers that some servers take as the request target (`X-Original-URL`,
  `X-Rewrite-URL`, ...), and a repeated `Host`, `Content-Length` or
  `Transfer-Encoding` header;
- method-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
  `X-Method-Override`, with `-` or `_`) on anything but POST, naming anything
  but PUT, PATCH, DELETE or POST, or naming two different methods.

RFC 3986 section 6.2.2.2: percent-encoded unreserved characters
(ALPHA / DIGIT / "-" / "." / "_" / "~") are equivalent to the characters
themselves, so they are decoded; every other percent-encoding is kept, with its
hex digits in upper case. Matching is case-insensitive (Azure DevOps routes
are), but the path is forwarded with the case it was sent in.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.errors import BadRequest
from gateway.memo import Memo

HOSTS_PREFIX = "_hosts"
MAX_TARGET_LENGTH = 8192
MAX_SEGMENTS = 128
OVERRIDE_HEADERS = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
OVERRIDABLE = frozenset({"PUT", "PATCH", "DELETE", "POST"})
# Headers IIS URL Rewrite, Symfony, Zend and others take as the request target.
TARGET_HEADERS = frozenset(
    {"x-original-url", "x-rewrite-url", "x-original-uri", "x-override-url", "x-http-destinationurl"}
)
SINGLE_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})

_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar without pct-encoded: unreserved / sub-delims / ":" / "@"
_PATH_CHARS = _UNRESERVED | frozenset("!$&'()*+,;=:@/%")
_QUERY_CHARS = _PATH_CHARS | frozenset("?")
# Query strings in the wild also carry these unencoded; they cannot change the path.
_QUERY_LENIENT = frozenset('[]{}|^`"<>')
_QUERY_ALLOWED = _QUERY_CHARS | _QUERY_LENIENT


def _only(chars: frozenset[str]) -> re.Pattern[str]:
    """A pattern that matches a text made of `chars` alone (empty included)."""
    return re.compile("[" + "".join(re.escape(c) for c in sorted(chars)) + "]*")


_ONLY_PATH_CHARS = _only(_PATH_CHARS)
_ONLY_QUERY_ALLOWED = _only(_QUERY_ALLOWED)


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # key of upstream.hosts
    path: str  # canonical path to send upstream (without /_hosts/{name})
    query: str  # raw query string, without '?'


def _reject(message: str, reason: str = "ambiguous_path") -> BadRequest:
    return BadRequest(message, reason=reason)


def _segment(raw: str, in_packaging: bool) -> str:
    """One canonical segment: unreserved decoded, the rest kept and checked."""
    if "%" not in raw:
        return raw  # its characters were checked with the whole path
    out: list[str] = []
    pending = bytearray()  # consecutive non-unreserved percent-encoded bytes
    i, n = 0, len(raw)

    def flush() -> None:
        if pending:
            try:
                bytes(pending).decode("utf-8")  # strict: rejects overlong forms
            except UnicodeDecodeError:
                raise _reject("percent-encoded bytes are not valid UTF-8") from None
            out.append("".join(f"%{b:02X}" for b in pending))
            pending.clear()

    while i < n:
        ch = raw[i]
        if ch != "%":
            flush()
            out.append(ch)
            i += 1
            continue
        hexa = raw[i + 1 : i + 3]
        if len(hexa) != 2 or not set(hexa) <= _HEX:
            raise _reject("invalid percent-encoding in path")
        byte = int(hexa, 16)
        i += 3
        if byte == 0x25 and set(raw[i : i + 2]) <= _HEX and len(raw[i : i + 2]) == 2:
            # IIS refuses double escaping (request filtering, allowDoubleEscaping=false);
            # a server that decoded twice would see another path than the one authorized.
            raise _reject("double percent-encoding in path")
        if chr(byte) in _UNRESERVED:
            flush()
            out.append(chr(byte))
        elif byte == 0x2F and in_packaging:
            pending.append(byte)  # checked by the caller (npm scoped packages)
        elif byte in (0x2F, 0x5C):
            raise _reject("encoded '/' or '\\' in path")
        elif byte < 0x20 or byte == 0x7F:
            raise _reject("encoded NUL or control character in path")
        else:
            pending.append(byte)
    flush()
    return "".join(out)


def _check_npm_scoped(segment: str) -> None:
    # npm asks for scoped packages as `@scope%2Fname`; Azure Artifacts serves them
    # so under /_packaging/. SECURITY: that one form is the only encoded '/' let
    # through, and neither half may be a dot segment once the server decodes it.
    if "%2F" not in segment:
        return
    scope, sep, name = segment.partition("%2F")
    if (
        not sep
        or not scope.startswith("@")
        or scope in ("@", "@.", "@..")
        or name in ("", ".", "..")
        or "%" in scope
        or "%2F" in name
    ):
        raise _reject("encoded '/' in path")


def canonicalize(
    raw_target: str, hosts: Collection[str], *, max_length: int = MAX_TARGET_LENGTH
) -> Target:
    """Split and check `raw_target`; raise BadRequest if it is ambiguous."""
    if len(raw_target) > max_length:
        raise _reject(f"request target longer than {max_length} characters", "bad_request")
    if not raw_target.startswith("/"):
        # absolute-form (http://host/path), authority-form (host:443), asterisk-form (*)
        raise _reject("request target must be a path (origin-form)")
    path, _, query = raw_target.partition("?")
    if "#" in raw_target:
        raise _reject("request target must not carry a fragment")
    if not _ONLY_PATH_CHARS.fullmatch(path):
        bad = sorted(set(path) - _PATH_CHARS)[0]
        raise _reject(f"character {bad!r} is not allowed unencoded in a path")
    if query:
        _check_query(query)
    if _plain(path):
        return Target(host="main", path=path, query=query)
    host, canonical = _canonical_path(path, hosts)
    return Target(host=host, path=canonical, query=query)


def _plain(path: str) -> bool:
    """True when `_canonical_path` would accept `path` unchanged, on the main host.

    The usual case. Without percent-encodings every segment is already
    canonical; without '//', '/.' and a /_hosts/ prefix no segment can be empty,
    a dot segment or a host name. Whatever this is unsure of takes the full walk.
    """
    return (
        "%" not in path
        and "//" not in path
        and "/." not in path
        and path[1:7].lower() != HOSTS_PREFIX
        and path.count("/") <= MAX_SEGMENTS
    )


def _canonical_path(path: str, hosts: Collection[str]) -> tuple[str, str]:
    """The host key and canonical path of a path whose characters were checked."""
    raw_segments = path.split("/")[1:]
    if len(raw_segments) > MAX_SEGMENTS:
        raise _reject(f"path has more than {MAX_SEGMENTS} segments", "bad_request")
    segments: list[str] = []
    in_packaging = False
    for i, raw in enumerate(raw_segments):
        seg = _segment(raw, in_packaging)
        if seg == "" and i != len(raw_segments) - 1:
            raise _reject("empty path segment ('//')")
        # (percent-encoded dots were decoded above, so a dot segment starts with '.')
        if seg[:1] == "." and unquote(seg).partition(";")[0] in (".", ".."):
            raise _reject("dot segment in path")
        if in_packaging:
            _check_npm_scoped(seg)
        if not in_packaging and len(seg) == 10 and seg.lower() == "_packaging":
            in_packaging = True
        segments.append(seg)
    host = "main"
    if segments and segments[0].lower() == HOSTS_PREFIX:
        name = segments[1] if len(segments) > 1 else ""
        known = {h.lower(): h for h in hosts}
        if name.lower() not in known:
            raise _reject(f"unknown upstream host {name!r}", "bad_request")
        host = known[name.lower()]
        segments = segments[2:]
        if segments and segments[0].lower() == HOSTS_PREFIX:
            raise _reject("nested /_hosts/ prefix")
    return host, "/" + "/".join(segments)


def _check_query(query: str) -> None:
    if not _ONLY_QUERY_ALLOWED.fullmatch(query):
        raise _reject("control, space or non-ASCII character in query string")
    i = query.find("%")
    while i >= 0:
        hexa = query[i + 1 : i + 3]
        if len(hexa) != 2 or not set(hexa) <= _HEX:
            raise _reject("invalid percent-encoding in query string")
        if hexa == "00":
            raise _reject("encoded NUL in query string")
        i = query.find("%", i + 3)


def header_key(name: str) -> str:
    """The name headers are compared by: lower case, `_` read as `-`."""
    return name.lower().replace("_", "-")


# Header name as sent -> its key, for the same few names clients send every time.
MAX_NORMALIZED = 1024
_normalized: Memo[str, str] = Memo(header_key, size=MAX_NORMALIZED)


def check_headers(headers: Iterable[tuple[str, str]]) -> bool:
    """Reject headers that could make upstream see another target than the one authorized.

    True when a method-override header is among them (then `effective_method`
    has a method to work out; without one it is the request's own)."""
    seen: set[str] = set()
    overrides = False
    for name, _ in headers:
        key = _normalized[name]
        if key in OVERRIDE_HEADERS:
            overrides = True
        if key in TARGET_HEADERS:
            # SECURITY: the gateway authorizes the request line's target; a server or
            # module behind it that honours these would act on a different one.
            raise _reject(f"header {name!r} is not accepted: it can override the request target")
        if key in SINGLE_HEADERS:
            if key in seen:
                raise _reject(f"header {name!r} is repeated", "bad_request")
            seen.add(key)
    return overrides


def effective_method(method: str, headers: Iterable[tuple[str, str]]) -> str:
    """The method to authorize: `method`, or the one an override header names.

    Azure DevOps honours `X-HTTP-Method-Override` (clients that cannot send
    PATCH send POST with it), so the request is authorized as the method the
    header names, and forwarded so that upstream executes exactly that method.
    """
    named: set[str] = set()
    for name, value in headers:
        if _normalized[name] in OVERRIDE_HEADERS:
            named.update(v.strip().upper() for v in value.split(","))
    if not named:
        return method.upper()
    if len(named) > 1:
        raise BadRequest(
            "method-override headers name different methods",
            reason="method_override_not_allowed",
        )
    (wanted,) = named
    if method.upper() != "POST":
        raise BadRequest(
            f"a method-override header is only accepted on POST, not {method.upper()}",
            reason="method_override_not_allowed",
        )
    if wanted not in OVERRIDABLE:
        raise BadRequest(
            f"method override to {wanted or 'nothing'!r} is not allowed "
            f"(allowed: {', '.join(sorted(OVERRIDABLE))})",
            reason="method_override_not_allowed",
        )
    return wanted
