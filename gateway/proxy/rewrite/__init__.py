"""Stage 5b: keep clients behind the gateway by rewriting Azure DevOps URLs.

Takes upstream response headers and (JSON or HTML) bodies and returns them with
every URL on a configured upstream host pointed at the gateway's public URL
instead: the `main` host maps to the gateway's root and every other host `name`
to `/_hosts/{name}/`. The legacy `{org}.visualstudio.com` and
`{org}.vsrm.visualstudio.com` forms map to the hosts whose base URL is the
matching `*.dev.azure.com` one.

What is rewritten:
- the `Location` and `Content-Location` headers (absolute, or relative to the
  upstream host the response came from);
- JSON bodies (any `application/json` or `*+json` type): the string values
  under URL-valued keys, see `gateway.proxy.rewrite.json_body` (`url`,
  `remoteUrl`, `_links.*.href`, resource-area `locationUrl`, the location
  service's `accessPoint` and `location`, NuGet v3 `@id`, `packageContent`,
  `registration`, npm `tarball`, ...);
- PyPI simple pages, HTML (PEP 503) and JSON (PEP 691): every link, absolute,
  root-relative or relative, see `gateway.proxy.rewrite.html_body` and
  `gateway.proxy.rewrite.kinds`.
- Git LFS batch answers: every action's `href`, and an action pointed at the
  gateway loses the `Authorization` header upstream put in it, see
  `gateway.proxy.lfs`.

What is left alone:
- `webUrl` and `_links.web.href`: they are for browsers and must open the real
  site, which the gateway does not serve;
- URLs on hosts that are not configured (a redirect to blob storage passes
  through unrewritten, and the proxy never follows redirects);
- free text (a URL inside a description or commit message).

A body that cannot be rewritten faithfully passes through byte for byte, and
`on_skip` is told why (`azdo_gateway_rewrite_skipped_total{reason}`): larger
than `limits.rewrite_max_bytes` (`too_large`), an unknown or broken content
encoding (`unknown_encoding`, `bad_compression`), not UTF-8 (`invalid_utf8`),
not JSON (`not_json`), a JSON document that is a bare string or number
(`top_level_scalar`), nested too deep to check (`too_deep`). Rewriting never
fails an answer.

Big bodies never hold the event loop: `rewrite_body_async` does the work in
slices of a few hundred URLs and lets other requests run between them.

The public URL is `listen.public_url`; without one it is derived from the
listening socket the request arrived on, never from the client's `Host`
header unless that host is listed in `listen.allowed_hosts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping

from aiohttp import web
from multidict import CIMultiDict

from gateway.config.model import Config
from gateway.memo import Memo
from gateway.proxy.rewrite import encoding as enc
from gateway.proxy.rewrite.json_body import Skip
from gateway.proxy.rewrite.kinds import KINDS, BodyKind, Page
from gateway.proxy.rewrite.urls import HOSTS_PREFIX, UrlMap
from gateway.proxy.search import contains_any

__all__ = ["HOSTS_PREFIX", "Rewriter", "Skip"]

_LOCATIONS = frozenset({"location", "content-location"})
SYNC_BYTES = 256 * 1024  # bodies up to this size are rewritten in one go
MAX_CONTENT_TYPES = 256  # Content-Types whose kinds a Rewriter remembers


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
        self.urls = UrlMap(gw.upstream.hosts)
        # Content-Type -> the kinds whose types it matches (then their paths decide)
        self._kinds: Memo[str, tuple[BodyKind, ...]] = Memo(
            lambda content_type: tuple(kind for kind in KINDS if kind.types.match(content_type)),
            size=MAX_CONTENT_TYPES,
            longest=128,
        )

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

    def _public(self, public_url: str | None) -> str:
        return (public_url or self.public_url_for()).rstrip("/")

    def map_url(self, url: str, public_url: str | None = None) -> str | None:
        """The gateway URL for an absolute Azure DevOps URL, or None if it is not one."""
        return self.urls.map_url(url, self._public(public_url))

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
        for name, value in headers.items():
            if name.lower() in _LOCATIONS:
                value = self._location(value, host, public_url)
            out.add(name, value)
        return out

    def _location(self, value: str, host: str, public_url: str | None) -> str:
        v = value.strip()
        public = self._public(public_url)
        if v.startswith("//"):  # scheme-relative: resolve against the upstream host's scheme
            base = self.urls.by_name.get(host)
            mapped = self.urls.map_url(f"{base.origin[0] if base else 'https'}:{v}", public)
        elif v.startswith("/"):
            mapped = self.urls.map_path(v, host, public)
        else:
            mapped = self.urls.map_url(v, public)
        return mapped if mapped is not None else value

    # --- bodies ---------------------------------------------------------------

    def kind_of(self, content_type: str, path: str | None = None) -> BodyKind | None:
        """The kind of body a Content-Type announces (from upstream `path`), if the
        rewriter reads it."""
        for kind in self._kinds[content_type]:
            if kind.paths is None or (path is not None and kind.paths.search(path) is not None):
                return kind
        return None

    def look(self, headers: Mapping[str, str], path: str | None = None) -> tuple[bool, str | None]:
        """Whether to buffer an answer for `rewrite_body` (`wants_body`), and why a
        body of a kind the rewriter reads is passed through unread (`unknown_encoding`,
        `too_large`; None if it is read, or not of such a kind)."""
        if self.kind_of(headers.get("Content-Type", ""), path) is None:
            return False, None
        reason = self._unread_reason(headers)
        return reason is None and headers.get("Content-Length") != "0", reason

    def wants_body(self, headers: Mapping[str, str], path: str | None = None) -> bool:
        """Whether a response with these headers should be buffered for `rewrite_body`.

        True for a kind of body the rewriter reads, in an encoding it can read, not
        declared larger than the limit. A body without Content-Length may still turn
        out larger: the caller stops buffering at `max_bytes` and streams the rest
        untouched.
        """
        return self.look(headers, path)[0]

    def _unread_reason(self, headers: Mapping[str, str]) -> str | None:
        if headers.get("Content-Encoding", "").strip().lower() not in enc.ENCODINGS:
            return "unknown_encoding"
        length = headers.get("Content-Length")
        if length is not None:
            try:
                if int(length) > self.max_bytes:
                    return "too_large"
            except ValueError:
                return "unknown_length"
        return None

    def rewrite_body(
        self,
        body: bytes,
        *,
        public_url: str | None = None,
        content_encoding: str = "",
        content_type: str = "application/json",
        host: str = "main",
        path: str = "/",
        on_skip: Callable[[str], None] | None = None,
    ) -> bytes:
        """`body` with Azure DevOps URLs rewritten, in the same content encoding.

        Returns `body` itself (the very same bytes) when there is nothing to rewrite
        or it cannot be rewritten faithfully (then `on_skip` gets the reason).
        `host` and `path` say where the body came from, for relative links.
        """
        inside = self._inside(body, content_encoding, content_type, path, on_skip)
        if inside is None:
            return body
        steps = self._steps(body, *inside, public_url, host, path, on_skip)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            result: bytes = done.value
            return result

    async def rewrite_body_async(
        self,
        body: bytes,
        *,
        public_url: str | None = None,
        content_encoding: str = "",
        content_type: str = "application/json",
        host: str = "main",
        path: str = "/",
        on_skip: Callable[[str], None] | None = None,
    ) -> bytes:
        """`rewrite_body`, letting other tasks of the event loop run between slices."""
        inside = self._inside(body, content_encoding, content_type, path, on_skip)
        if inside is None:
            return body
        steps = self._steps(body, *inside, public_url, host, path, on_skip)
        small = len(body) <= SYNC_BYTES
        try:
            while True:
                next(steps)
                if not small:
                    await asyncio.sleep(0)
        except StopIteration as done:
            result: bytes = done.value
            return result

    def _inside(
        self,
        body: bytes,
        content_encoding: str,
        content_type: str,
        path: str,
        on_skip: Callable[[str], None] | None,
    ) -> tuple[bytes, BodyKind, str] | None:
        """The body decoded, its kind and its encoding, when it has URLs to rewrite;
        None when it goes as it is (`on_skip` gets the reason it could not be read)."""
        kind = self.kind_of(content_type, path)
        if kind is None or not body:
            return None
        encoding = content_encoding.strip().lower()
        if encoding not in enc.ENCODINGS:
            reason = "unknown_encoding"
        elif len(body) > self.max_bytes:
            reason = "too_large"
        else:
            try:
                raw = enc.decode(body, encoding, self.max_bytes)
            except enc.BadEncoding as err:
                reason = err.reason
            else:
                if kind.needs_needle and not _has_needle(raw, self.urls.needles):
                    return None
                return raw, kind, encoding
        if on_skip is not None:
            on_skip(reason)
        return None

    def _steps(
        self,
        body: bytes,
        raw: bytes,
        kind: BodyKind,
        encoding: str,
        public_url: str | None,
        host: str,
        path: str,
        on_skip: Callable[[str], None] | None,
    ) -> Generator[None, None, bytes]:
        """The rewrite of `raw` (`body` decoded), in slices: the event loop may run
        other tasks at each `yield`."""
        yield
        page = Page(self.urls, self._public(public_url), host, path)
        out = yield from kind.rewrite(raw, page)
        if isinstance(out, Skip):
            if on_skip is not None:
                on_skip(out.reason)
            return body
        if out is raw:
            return body
        yield
        return enc.encode(out, encoding)


def _has_needle(raw: bytes, needles: tuple[bytes, ...]) -> bool:
    """Whether any configured host name (in lower case) is in `raw`, in any case."""
    if contains_any(raw, needles):
        return True
    # no capital letter (islower() stops at the first one): nothing more to find
    return not raw.islower() and contains_any(raw.lower(), needles)
