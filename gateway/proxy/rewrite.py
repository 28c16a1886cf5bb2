"""Stage 5b: keep clients behind the gateway by rewriting Azure DevOps URLs.

Takes upstream response headers and (small, JSON) bodies and returns them with
every absolute URL on a configured upstream host pointed at the gateway's
public URL instead: the `main` host maps to the gateway's root and every other
host `name` to `/_hosts/{name}/`. The legacy `{org}.visualstudio.com` and
`{org}.vsrm.visualstudio.com` forms map to the hosts whose base URL is the
matching `*.dev.azure.com` one.

What is rewritten:
- the `Location` and `Content-Location` headers (absolute, or relative to the
  upstream host the response came from);
- in JSON bodies, string values under URL-valued keys: `href` (`_links.*.href`),
  any key ending in `url` (`url`, `remoteUrl`, resource-area `locationUrl`, ...),
  the location service's `accessPoint` (accessMappings) and `location`
  (serviceDefinitions' locationMappings), and the URLs of the JSON package
  protocols (NuGet v3 `@id`, `packageContent`, `registration`; npm `tarball`).

What is left alone:
- `webUrl` and `_links.web.href`: they are for browsers and must open the real
  site, which the gateway does not serve;
- URLs on hosts that are not configured (a redirect to blob storage passes
  through unrewritten, and the proxy never follows redirects);
- free text (a URL inside a description or commit message), non-JSON bodies,
  bodies with an unknown content encoding or larger than
  `limits.rewrite_max_bytes`.

The public URL is `listen.public_url`; without one it is derived from the
listening socket the request arrived on, never from the client's `Host`
header unless that host is listed in `listen.allowed_hosts`.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import orjson
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.model import Config

HOSTS_PREFIX = "/_hosts/"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_JSON_TYPES = re.compile(r"^\s*(application|text)/([a-z0-9.+-]*\+)?json\s*(;|$)", re.I)
_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
# https://{org}.visualstudio.com and https://{org}.{service}.visualstudio.com (legacy forms)
_LEGACY = re.compile(r"^([a-z0-9][a-z0-9-]{0,62})(?:\.([a-z]+))?\.visualstudio\.com$")
# Services whose legacy `{org}.{service}.visualstudio.com` host is an organization host. (vssps is
# not among them: `*.vssps.visualstudio.com` also names deployment-level hosts such as `app`.)
_LEGACY_SERVICES = frozenset({"vsrm", "feeds", "pkgs", "vsaex", "vstmr", "almsearch", "extmgmt"})
# scheme://[user@]host[:port]path[?query][#fragment], parsed once per candidate string.
_ABSOLUTE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<user>[^/?#@]*)@)?"
    r"(?P<host>\[[^\]/?#]*\]|[^/?#:@\[\]]*)(?::(?P<port>[^/?#]*))?"
    r"(?P<path>[^?#]*)(?P<tail>[?#].*)?",
    re.S,
)
_DEFAULT_COLLECTION = re.compile(r"^/defaultcollection(?=/|$)", re.I)
_BROWSER_KEYS = frozenset({"weburl"})  # keys whose URLs open in a browser: keep the real site
_BROWSER_LINKS = frozenset({"web", "html"})  # _links relations for browsers
# Keys (besides `*url`) whose string values are URLs: links, the location service, and the
# package protocols that answer in JSON (NuGet v3 `@id`/`packageContent`/`registration`,
# npm `dist.tarball`), so that package clients keep fetching through the gateway.
_URL_KEYS = frozenset(
    {"href", "accesspoint", "location", "@id", "packagecontent", "registration", "tarball"}
)


@dataclass(frozen=True, slots=True)
class _Base:
    name: str  # key of upstream.hosts
    origin: tuple[str, str, int]  # scheme, host, port
    path: str  # base path without trailing slash ("" for a bare origin)
    prefix: str  # where the host lives on the gateway: "" or "/_hosts/{name}"


def _lead(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")


def _origin(parts: SplitResult) -> tuple[str, str, int] | None:
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host.lower(), port or _DEFAULT_PORTS[scheme]


class Rewriter:
    """Rewrites Azure DevOps URLs in responses; one per configuration."""

    def __init__(self, config: Config) -> None:
        gw = config.gateway
        self.max_bytes = gw.limits.rewrite_max_bytes
        self.allowed_hosts = frozenset(h.lower() for h in gw.listen.allowed_hosts)
        self.configured_public_url = (gw.listen.public_url or "").rstrip("/") or None
        scheme = "https" if gw.listen.tls else "http"
        host = gw.listen.host
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - describing, not binding
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        self.listener_url = f"{scheme}://{host}:{gw.listen.port}"
        bases: list[_Base] = []
        legacy: dict[str | None, _Base] = {}
        for name, url in gw.upstream.hosts.items():
            parts = urlsplit(url)
            origin = _origin(parts)
            if origin is None:
                continue
            prefix = "" if name == "main" else HOSTS_PREFIX + name
            base = _Base(name, origin, parts.path.rstrip("/"), prefix)
            bases.append(base)
            if origin[0] == "https" and base.path == "":
                if origin[1] == "dev.azure.com":
                    legacy[None] = base
                elif origin[1].endswith(".dev.azure.com"):
                    legacy[origin[1].removesuffix(".dev.azure.com")] = base
        # Longest base path first, so that two hosts sharing an origin resolve correctly.
        self._bases = tuple(sorted(bases, key=lambda b: len(b.path), reverse=True))
        self._legacy = legacy
        self._by_name = {b.name: b for b in bases}
        by_origin: dict[tuple[str, str, int], list[_Base]] = {}
        for base in self._bases:
            by_origin.setdefault(base.origin, []).append(base)
        self._by_origin = {k: tuple(v) for k, v in by_origin.items()}
        # "scheme://host[:port]" exactly as Azure DevOps writes its own URLs (lower
        # case, default port left out) -> the bases on that origin, for `map_url`'s
        # fast path.
        self._by_lead = {_lead(origin): bases for origin, bases in self._by_origin.items()}
        needles = {b.origin[1] for b in bases}
        if legacy:
            needles.add("visualstudio.com")
        self._needles = tuple(n.encode() for n in sorted(needles))

    # --- public URL ---------------------------------------------------------

    def public_url_for(self, request: web.BaseRequest | None = None) -> str:
        """The base URL clients reach the gateway at, for URLs in this response."""
        if self.configured_public_url:
            return self.configured_public_url
        if request is None:
            return self.listener_url
        scheme = "https" if request.transport is not None and request.secure else "http"
        host_header = request.headers.get("Host", "").strip().lower()
        # SECURITY: a client-supplied Host only becomes the URL we hand out if the operator
        # listed it; otherwise anyone could make responses point other clients elsewhere.
        if host_header and host_header in self.allowed_hosts:
            return f"{scheme}://{host_header}"
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            addr, port = str(sockname[0]), int(sockname[1])
            if addr in ("0.0.0.0", "::"):  # noqa: S104
                addr = "127.0.0.1"
            addr = f"[{addr}]" if ":" in addr else addr
            return f"{scheme}://{addr}:{port}"
        return self.listener_url

    # --- URLs -----------------------------------------------------------------

    def map_url(self, url: str, public_url: str | None = None) -> str | None:
        """The gateway URL for an absolute Azure DevOps URL, or None if it is not one."""
        # Fast path for the common spelling: the origin as configured, then "/", "?",
        # "#" or the end. The answer is the one the full parse below would give.
        start = url.find("://") + 3
        if start > 3:
            end = len(url)
            for stop in "/?#":
                i = url.find(stop, start, end)
                if i >= 0:
                    end = i
            bases = self._by_lead.get(url[:end])
            if bases is not None:
                path_end = len(url)
                for stop in "?#":
                    i = url.find(stop, end, path_end)
                    if i >= 0:
                        path_end = i
                path = url[end:path_end]
                for base in bases:
                    if base.path and not (path == base.path or path.startswith(base.path + "/")):
                        continue
                    public = (public_url or self.public_url_for()).rstrip("/")
                    return public + base.prefix + url[end + len(base.path) :]
        return self._map_parsed(url, public_url)

    def _map_parsed(self, url: str, public_url: str | None) -> str | None:
        """`map_url` for every spelling: user info, explicit ports, any case, legacy hosts."""
        m = _ABSOLUTE.fullmatch(url)
        if m is None:
            return None
        scheme = m["scheme"].lower()
        default = _DEFAULT_PORTS.get(scheme)
        port_text = m["port"]
        if default is None or (port_text and not port_text.isdigit()):
            return None
        host = m["host"].lower().strip("[]")
        if not host:
            return None
        origin = (scheme, host, int(port_text) if port_text else default)
        path, tail = m["path"], m["tail"] or ""
        public = (public_url or self.public_url_for()).rstrip("/")
        if m["user"] is not None:  # keep `fabrikam@` of git remote URLs
            public_scheme, _, rest = public.partition("://")
            public = f"{public_scheme}://{m['user']}@{rest}"
        for base in self._by_origin.get(origin, ()):
            if base.path and not (path == base.path or path.startswith(base.path + "/")):
                continue
            return public + base.prefix + path[len(base.path) :] + tail
        legacy = _LEGACY.match(host) if scheme == "https" else None
        if legacy is None:
            return None
        org, service = legacy.group(1), legacy.group(2)
        if service is not None and service not in _LEGACY_SERVICES:
            return None
        base_for = self._legacy.get(service)
        if base_for is None:
            return None
        # https://fabrikam.visualstudio.com/DefaultCollection/_apis -> /fabrikam/_apis
        rest = _DEFAULT_COLLECTION.sub("", path)
        return f"{public}{base_for.prefix}/{org}{rest}{tail}"

    # --- headers --------------------------------------------------------------

    def rewrite_headers(
        self,
        headers: Mapping[str, str],
        *,
        host: str = "main",
        public_url: str | None = None,
    ) -> CIMultiDict[str]:
        """A copy of `headers` with `Location` / `Content-Location` pointing at the gateway.

        `host` is the upstream host the response came from, for relative locations.
        Locations on hosts that are not configured are passed through unchanged.
        """
        out: CIMultiDict[str] = CIMultiDict()
        items = headers.items()
        for name, value in items:
            if name.lower() in ("location", "content-location"):
                value = self._location(value, host, public_url)
            out.add(name, value)
        return out

    def _location(self, value: str, host: str, public_url: str | None) -> str:
        v = value.strip()
        if v.startswith("//"):  # scheme-relative: resolve against the upstream host's scheme
            base = self._by_name.get(host)
            mapped = self.map_url(f"{base.origin[0] if base else 'https'}:{v}", public_url)
            return mapped if mapped is not None else value
        if v.startswith("/"):
            base = self._by_name.get(host)
            if base is None:
                return value
            if base.path and not (v == base.path or v.startswith(base.path + "/")):
                return value  # outside the part of the upstream the gateway proxies
            public = (public_url or self.public_url_for()).rstrip("/")
            return urlsplit(public).path + base.prefix + v[len(base.path) :]
        mapped = self.map_url(v, public_url)
        return mapped if mapped is not None else value

    # --- bodies ---------------------------------------------------------------

    def wants_body(self, headers: Mapping[str, str]) -> bool:
        """Whether a response with these headers should be buffered for `rewrite_body`.

        True for JSON in an encoding we can read, not declared larger than the limit.
        A body without Content-Length may still turn out larger: the caller stops
        buffering at `max_bytes` and streams the rest untouched.
        """
        if not _JSON_TYPES.match(headers.get("Content-Type", "")):
            return False
        if headers.get("Content-Encoding", "").strip().lower() not in _ENCODINGS:
            return False
        length = headers.get("Content-Length")
        if length is not None:
            try:
                return 0 < int(length) <= self.max_bytes
            except ValueError:
                return False
        return True

    def rewrite_body(
        self, body: bytes, *, public_url: str | None = None, content_encoding: str = ""
    ) -> bytes:
        """`body` with Azure DevOps URLs rewritten, in the same content encoding.

        Returns `body` itself (the very same bytes) when there is nothing to rewrite or it
        cannot be read as JSON, so an unreadable body is passed through, never broken.
        """
        encoding = content_encoding.strip().lower()
        if encoding not in _ENCODINGS or len(body) > self.max_bytes:
            return body
        try:
            raw = _decode(body, encoding, self.max_bytes)
            raw.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259 section 8.1)
        except (OSError, EOFError, zlib.error, ValueError):
            return body
        lowered = raw.lower()
        if not any(n in lowered for n in self._needles):
            return body
        public = (public_url or self.public_url_for()).rstrip("/")
        changed = [False]
        try:
            doc, fast = _loads(raw)
            new = self._walk(doc, public, changed, in_links=False)
            if not changed[0]:
                return body
            out = _dumps(new, fast)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to walk
            return body
        return _encode(out, encoding)

    def _walk(self, node: Any, public: str, changed: list[bool], *, in_links: bool) -> Any:
        """Rewrite URLs in `node` (fresh from json.loads, so it is changed in place)."""
        if isinstance(node, list):
            for value in node:
                if isinstance(value, dict | list):
                    self._walk(value, public, changed, in_links=False)
            return node
        for key, value in node.items():
            kind = _key_kind(key)
            if isinstance(value, str):
                if kind == _URL:
                    mapped = self.map_url(value, public)
                    if mapped is not None:
                        node[key] = mapped
                        changed[0] = True
            elif isinstance(value, dict):
                if not (in_links and kind == _BROWSER_LINK):
                    self._walk(value, public, changed, in_links=kind == _LINKS)
            elif isinstance(value, list) and value:
                if kind == _URL:
                    node[key] = self._urls(value, public, changed)
                else:
                    self._walk(value, public, changed, in_links=False)
        return node

    def _urls(self, values: list[Any], public: str, changed: list[bool]) -> list[Any]:
        out = []
        for value in values:
            mapped = self.map_url(value, public) if isinstance(value, str) else None
            if mapped is not None:
                changed[0] = True
            out.append(value if mapped is None else mapped)
        return out


_OTHER, _URL, _LINKS, _BROWSER_LINK = range(4)
_KINDS: dict[str, int] = {}


def _key_kind(key: str) -> int:
    """What a JSON key says about its value (cached: the same keys recur in every item)."""
    kind = _KINDS.get(key)
    if kind is None:
        lk = key.lower()
        if lk in _BROWSER_KEYS:
            kind = _OTHER
        elif lk.endswith("url") or lk in _URL_KEYS:
            kind = _URL
        elif lk == "_links":
            kind = _LINKS
        elif lk in _BROWSER_LINKS:
            kind = _BROWSER_LINK
        else:
            kind = _OTHER
        if len(_KINDS) < 4096:  # keys come from upstream data: keep the cache bounded
            _KINDS[key] = kind
    return kind


# orjson reads an integer past 64 bits as a float (losing digits) and writes
# NaN and Infinity as null: a body that has either goes through the json module.
# (A run of 19 digits is found by mapping every digit to "0" and everything
# else to " ": two passes in C, where a regular expression backtracks at every digit.)
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(raw: bytes) -> tuple[Any, bool]:
    """The parsed body, and whether orjson may write it back."""
    if _LONG_NUMBER not in raw.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:  # NaN, nesting past 1024 levels, not JSON at all
            pass
    return json.loads(raw), False


def _dumps(doc: Any, fast: bool) -> bytes:
    """Compact UTF-8 JSON, as Azure DevOps writes it."""
    if fast:
        try:
            return orjson.dumps(doc)
        except TypeError:  # orjson.JSONEncodeError: nesting past 255 levels
            pass
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _decode(body: bytes, encoding: str, limit: int) -> bytes:
    """Decompress `body`; raise ValueError if it inflates past `limit` bytes."""
    if encoding in ("gzip", "x-gzip"):
        wbits = [16 + zlib.MAX_WBITS]
    elif encoding == "deflate":
        wbits = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib-wrapped, or raw as some servers send
    else:
        return body
    for i, bits in enumerate(wbits):
        d = zlib.decompressobj(bits)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error:
            if i + 1 < len(wbits):
                continue
            raise
        if len(out) > limit or d.unconsumed_tail:
            raise ValueError("decompressed body over the rewrite limit")
        if not d.eof:
            raise ValueError("truncated compressed body")
        return out
    raise ValueError("unreachable")


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body, compresslevel=5)
    if encoding == "deflate":
        return zlib.compress(body, 5)
    return body
