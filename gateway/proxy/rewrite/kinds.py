"""The kinds of body the rewriter reads, and where a body came from.

A `BodyKind` says which Content-Types (and upstream paths) it takes and how it
rewrites a decoded body (a generator that yields between slices of work and
returns the new bytes, the same bytes, or a `Skip`). `KINDS` is tried in
order: the first kind whose `types` match the Content-Type and whose `paths`
match the upstream path reads the body. A kind for a particular JSON document
(an answer whose structure matters, not just its URL strings) is a
`tree_kind`: the document is parsed, handed to a hook that changes it in place,
and written again only when the hook says it changed something.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import orjson

from gateway.proxy import lfs
from gateway.proxy.rewrite import html_body
from gateway.proxy.rewrite.json_body import Skip, rewrite_json
from gateway.proxy.rewrite.urls import UrlMap

Steps = Generator[None, None, bytes | Skip]


@dataclass(frozen=True, slots=True)
class Page:
    """Where a body came from and where its links must point."""

    urls: UrlMap
    public: str  # the gateway's public URL, without a trailing slash
    host: str  # the upstream host (a key of upstream.hosts)
    path: str  # the path of the request on that host

    def map_url(self, url: str) -> str | None:
        """The gateway URL for an absolute Azure DevOps URL (see UrlMap.map_url)."""
        return self.urls.map_url(url, self.public)

    def link(self, ref: str, base: str | None = None, *, relative: bool = True) -> str | None:
        """Where a link found in this body must point, or None to leave it.

        Absolute links on a configured host become absolute gateway URLs; links
        relative to the upstream host (root-relative, and with `relative` also
        relative ones, resolved against `base` or the page's own path) become
        root-relative gateway paths, so that a client resolving them against the
        gateway's page lands on the same upstream resource.
        """
        ref = ref.strip()
        if not ref or ref.startswith("#"):
            return None
        if "://" in ref.split("/", 1)[0] or _SCHEME.match(ref):
            return self.map_url(ref)
        if ref.startswith("//"):
            return self.map_url("https:" + ref)
        if not ref.startswith("/"):
            if not relative:
                return None
            resolved = urljoin("http://upstream" + (base or self.path), ref)
            if not resolved.startswith("http://upstream/"):
                return None
            ref = resolved.removeprefix("http://upstream")
        return self.urls.map_path(ref, self.host, self.public)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True, slots=True)
class BodyKind:
    name: str
    types: re.Pattern[str]  # Content-Type values (matched from the start)
    rewrite: Callable[[bytes, Page], Steps]
    paths: re.Pattern[str] | None = None  # upstream paths it applies to (any, if None)
    needs_needle: bool = True  # only worth reading when a configured host name is in it


def _json(raw: bytes, page: Page) -> Steps:
    return rewrite_json(raw, page.urls.map_url, page.public)  # its own steps, no wrapper


def _html(raw: bytes, page: Page) -> Steps:
    return html_body.rewrite_html(raw, page.link)


def tree_kind(
    name: str, types: re.Pattern[str], hook: Callable[[Any, Page], bool], **kw: Any
) -> BodyKind:
    """A kind for a JSON document whose structure matters; `hook(doc, page)` changes
    `doc` in place and answers whether it changed anything. Numbers are kept as
    written (floats and integers past 64 bits are written back verbatim)."""

    def rewrite(raw: bytes, page: Page) -> Steps:
        yield
        try:
            doc = json.loads(raw, parse_float=orjson.Fragment, parse_int=_int)
        except (ValueError, RecursionError):
            return Skip("not_json")
        if not isinstance(doc, dict | list):
            return Skip("top_level_scalar")
        if not hook(doc, page):
            return raw
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:  # nesting past 255 levels, a lone surrogate
            return Skip("not_json")

    return BodyKind(name, types, rewrite, **kw)


def _int(text: str) -> int | orjson.Fragment:
    value = int(text)
    return value if -(2**63) <= value < 2**64 else orjson.Fragment(text)


def _pypi_files(doc: Any, page: Page) -> bool:
    """PEP 691: `files[].url` may be absolute, root-relative or relative."""
    changed = False
    files = doc.get("files") if isinstance(doc, dict) else None
    for entry in files if isinstance(files, list) else ():
        url = entry.get("url") if isinstance(entry, dict) else None
        if isinstance(url, str):
            mapped = page.link(url)
            if mapped is not None:
                entry["url"] = mapped
                changed = True
    return changed


_PACKAGING = re.compile(r"/_packaging/", re.I)
KINDS: list[BodyKind] = [
    tree_kind("git-lfs-batch", lfs.BATCH_TYPES, lfs.rewrite_batch, paths=lfs.BATCH_PATHS),
    tree_kind(
        "pypi-json",
        re.compile(r"^\s*application/vnd\.pypi\.simple\.v1\+json\s*(;|$)", re.I),
        _pypi_files,
        needs_needle=False,
    ),
    BodyKind(
        "html",
        re.compile(r"^\s*(text/html|application/vnd\.pypi\.simple\.v1\+html)\s*(;|$)", re.I),
        _html,
        paths=_PACKAGING,
        needs_needle=False,
    ),
    BodyKind(
        "json",
        re.compile(r"^\s*(application|text)/([a-z0-9.+-]*\+)?json\s*(;|$)", re.I),
        _json,
    ),
]
