"""Rewrite the links of an HTML page (PEP 503 simple pages of a package feed).

`rewrite_html(raw, link)` takes an HTML document (bytes, UTF-8) and a function
answering where a link must point (or None to leave it), and returns the page
with the `href` and `src` attributes of every element and its `data-*`
attributes that hold URLs changed, and nothing else: the page is read with the
standard library's HTML parser (the tags as a browser's tokenizer sees them,
comments, CDATA and script text skipped as such), and only the value of a
rewritten attribute is replaced in the original text, written again quoted
and escaped. A `<base href>` is followed for the links after it.

Like `rewrite_json` it is a generator that yields between slices of the page
and returns the new bytes, the same bytes, or a `Skip`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Generator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from gateway.proxy.rewrite.json_body import Skip

Link = Callable[..., str | None]  # (ref, base, *, relative) -> new ref or None
SLICE_CHARS = 64 * 1024
# One attribute in a start tag, as html.parser's own `attrfind_tolerant` reads it.
_ATTR = re.compile(
    r"((?<=[\'\"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*"
    r"(\'[^\']*\'|\"[^\"]*\"|(?![\'\"])[^>\s]*))?(?:\s|/(?!>))*"
)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*")
_LINK_ATTRS = frozenset({"href", "src"})


class _Links(HTMLParser):
    def __init__(self, link: Link) -> None:
        super().__init__(convert_charrefs=True)
        self.link = link
        self.base: str | None = None
        self.lines = [0]  # offset of each line start in the text fed so far
        self.edits: list[tuple[int, int, str]] = []  # (start, end, replacement)

    def note_lines(self, text: str, offset: int) -> None:
        i = text.find("\n")
        while i >= 0:
            self.lines.append(offset + i + 1)
            i = text.find("\n", i + 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag)

    def _tag(self, tag: str) -> None:
        text = self.get_starttag_text()
        if text is None:
            return
        line, col = self.getpos()
        start = self.lines[line - 1] + col
        name = _TAG_NAME.match(text)
        pos = name.end() if name else 0
        for m in _ATTR.finditer(text, pos):
            attr, value = m.group(1).lower(), m.group(3)
            if value is None or not (attr in _LINK_ATTRS or attr.startswith("data-")):
                continue
            if value[:1] in ("'", '"'):
                value = value[1:-1]
            ref = html.unescape(value)
            new = self.link(ref, self.base, relative=attr in _LINK_ATTRS)
            if tag == "base" and attr == "href":
                self.base = _base_path(ref, self.base)
            if new is None or new == ref:
                continue
            quoted = '"' + html.escape(new, quote=True) + '"'
            self.edits.append((start + m.start(3), start + m.end(3), quoted))


def _base_path(ref: str, current: str | None) -> str | None:
    """The path a `<base href>` makes relative links resolve against (same host only)."""
    resolved = urljoin("http://upstream" + (current or "/"), ref)
    parts = urlsplit(resolved)
    return parts.path if parts.netloc == "upstream" else current


def rewrite_html(raw: bytes, link: Link) -> Generator[None, None, bytes | Skip]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Skip("invalid_utf8")
    parser = _Links(link)
    for offset in range(0, len(text), SLICE_CHARS):
        chunk = text[offset : offset + SLICE_CHARS]
        parser.note_lines(chunk, offset)
        parser.feed(chunk)
        yield
    parser.close()
    if not parser.edits:
        return raw
    out: list[str] = []
    last = 0
    for start, end, replacement in sorted(parser.edits):
        if start < last:  # pragma: no cover - tags never overlap
            continue
        out.append(text[last:start])
        out.append(replacement)
        last = end
    out.append(text[last:])
    return "".join(out).encode("utf-8")
