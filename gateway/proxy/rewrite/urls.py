"""Which gateway URL stands for an Azure DevOps URL.

`UrlMap(hosts)` takes `upstream.hosts` (name -> base URL). `map_url(url, public)`
answers the gateway URL for an absolute URL on one of those hosts (the `main`
host at the gateway's root, every other host `name` under `/_hosts/{name}`),
including the legacy `{org}.visualstudio.com` and `{org}.{service}.visualstudio.com`
forms, and None for anything else. `map_path(path, host, public)` does the same for a
root-relative path on a known host.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

HOSTS_PREFIX = "/_hosts/"
_DEFAULT_PORTS = {"http": 80, "https": 443}
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
_PATH = re.compile(r"[^?#]*")


@dataclass(frozen=True, slots=True)
class Base:
    name: str  # key of upstream.hosts
    origin: tuple[str, str, int]  # scheme, host, port
    path: str  # base path without trailing slash ("" for a bare origin)
    prefix: str  # where the host lives on the gateway: "" or "/_hosts/{name}"

    def holds(self, path: str) -> bool:
        """Whether `path` is inside the part of the upstream this host proxies."""
        return not self.path or path == self.path or path.startswith(self.path + "/")


def _lead(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port == _DEFAULT_PORTS[scheme] else f":{port}")


def origin_of(parts: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, lower-cased host, port) of an http(s) URL; None for any other."""
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host.lower(), port or _DEFAULT_PORTS[scheme]


class UrlMap:
    """The configured upstream hosts, and where each lives on the gateway."""

    def __init__(self, hosts: Mapping[str, str]) -> None:
        bases: list[Base] = []
        legacy: dict[str | None, Base] = {}
        for name, url in hosts.items():
            parts = urlsplit(url)
            origin = origin_of(parts)
            if origin is None:
                continue
            prefix = "" if name == "main" else HOSTS_PREFIX + name
            base = Base(name, origin, parts.path.rstrip("/"), prefix)
            bases.append(base)
            if origin[0] == "https" and base.path == "":
                if origin[1] == "dev.azure.com":
                    legacy[None] = base
                elif origin[1].endswith(".dev.azure.com"):
                    legacy[origin[1].removesuffix(".dev.azure.com")] = base
        # Longest base path first, so that two hosts sharing an origin resolve correctly.
        self.bases = tuple(sorted(bases, key=lambda b: len(b.path), reverse=True))
        self.by_name = {b.name: b for b in bases}
        self._legacy = legacy
        by_origin: dict[tuple[str, str, int], list[Base]] = {}
        for base in self.bases:
            by_origin.setdefault(base.origin, []).append(base)
        self._by_origin = {k: tuple(v) for k, v in by_origin.items()}
        # "scheme://host[:port]" exactly as Azure DevOps writes its own URLs (lower case,
        # default port left out) -> the bases on that origin, for `map_url`'s fast path.
        self._by_lead = {_lead(origin): bases for origin, bases in self._by_origin.items()}
        # One of those leads at the start of a URL, then "/", "?", "#" or the end.
        leads = sorted(self._by_lead, key=len, reverse=True)
        self._lead = re.compile(
            "(?:" + "|".join(map(re.escape, leads)) + r")(?=[/?#]|\Z)" if leads else r"(?!)"
        )
        # Lower-case byte strings at least one of which is in any body worth reading.
        needles = {b.origin[1] for b in bases}
        if legacy:
            needles.add("visualstudio.com")
        self.needles = tuple(n.encode() for n in sorted(needles))

    def map_url(self, url: str, public: str) -> str | None:
        """The gateway URL for an absolute Azure DevOps URL, or None if it is not one.

        `public` is the gateway's public URL without a trailing slash.
        """
        # Fast path for the common spelling: the origin as configured, then "/", "?",
        # "#" or the end. The answer is the one the full parse below would give.
        lead = self._lead.match(url)
        if lead is not None:
            end = lead.end()
            for base in self._by_lead[lead.group()]:
                if not base.path:
                    return public + base.prefix + url[end:]
                path = _PATH.match(url, end).group()  # type: ignore[union-attr]
                if base.holds(path):
                    return public + base.prefix + url[end + len(base.path) :]
        return self._map_parsed(url, public)

    def _map_parsed(self, url: str, public: str) -> str | None:
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
        if m["user"] is not None:  # keep `fabrikam@` of git remote URLs
            public_scheme, _, rest = public.partition("://")
            public = f"{public_scheme}://{m['user']}@{rest}"
        for base in self._by_origin.get(origin, ()):
            if base.holds(path):
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

    def map_path(self, path: str, host: str, public: str) -> str | None:
        """The gateway path for a root-relative `path` on upstream host `host`.

        None when the host is unknown or the path is outside the part of it the
        gateway proxies. The answer is a root-relative path on the gateway (under
        the public URL's own path, if it has one).
        """
        base = self.by_name.get(host)
        if base is None or not base.holds(path.split("?", 1)[0].split("#", 1)[0]):
            return None
        return urlsplit(public).path + base.prefix + path[len(base.path) :]
