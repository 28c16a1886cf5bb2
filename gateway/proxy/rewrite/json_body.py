"""Rewrite URLs in a JSON body by replacing string tokens in place.

`rewrite_json(raw, map_url)` takes a JSON document (bytes) and a function that
answers the gateway URL for an Azure DevOps URL (or None). It is a generator:
it yields now and then so that a caller on an event loop can let other work
run, and returns the new document, the very same `raw` when nothing changed,
or a `Skip` saying why the body is passed through unchanged.

The document is never parsed into objects and written again: it is checked to
be JSON (msgspec, without building anything) and then copied with some string
tokens replaced by other string tokens. Numbers, spacing, key order, duplicate
keys and escapes outside the replaced strings stay byte for byte as they came
(`1e400`, 30-digit integers and `-0.0` included), so the answer is JSON exactly
when the upstream's was.

Which strings are URLs, from the key they are the value of (any case):
`href`, `location`, `accessPoint`, `@id`, `packageContent`, `registration`,
`tarball` and every key ending in `url` or `urls` except `webUrl`; and the strings of an
array under such a key, up to its first element that is an object or an array.
The `web` and `html` links (`"_links": {"web": {"href": ...}}`) are left
alone: they open the real site in a browser, which the gateway does not serve.

Why this is sound: in valid JSON an unescaped `"` followed by a letter opens a
string, the character before an opening quote is outside any string, and a
quote is escaped exactly when an odd run of backslashes precedes it. So from a
candidate `"http...` the key before it (if any) is found by looking back over a
`:` and one string, with no parse of what came earlier.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass

import msgspec
import orjson

from gateway.memo import Memo

Mapper = Callable[[str, str], str | None]  # (url, public URL) -> gateway URL or None

# A string's body after its opening quote, up to and including the closing quote.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_WS = re.compile(r"[ \t\r\n]*")
_WS_BYTES = re.compile(rb"[ \t\r\n]*")
_CANDIDATE = re.compile(r'"http')  # searched in the lower-cased copy
# `"web": {` and `"html": {`, and the whole object when it is one member `{"href": "..."}`.
# Each with its quoted name: a body without that name needs no search for it.
_LINKS = tuple(
    (
        f'"{name}"',
        re.compile(
            r'"' + name + r'"[ \t\r\n]*:[ \t\r\n]*(?:\{[ \t\r\n]*"[^"\\]*"[ \t\r\n]*:'
            r'[ \t\r\n]*"[^"\\]*"[ \t\r\n]*\}|(\{))'
        ),
    )
    for name in ("web", "html")
)
_ARRAY = re.compile(r"\[")
_SCALAR = re.compile(r'[^,\]\[{}" \t\r\n]+')
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_VALIDATE = msgspec.json.Decoder(msgspec.Raw)
_WS_CHARS = frozenset(" \t\r\n")
_UNSAFE = re.compile(r'["\\\x00-\x1f\u2028\u2029]')
SLICE = 256  # candidates between two yields
_IN_URL_ARRAY = '"'  # stands for the key of a string in an array under a URL key

_URL_KEYS = frozenset(
    {"href", "accesspoint", "location", "@id", "packagecontent", "registration", "tarball"}
)
_BROWSER_KEYS = frozenset({"weburl"})


@dataclass(frozen=True, slots=True)
class Skip:
    """Why a body is passed through unchanged (a bounded metric label)."""

    reason: str


def url_key(key: str) -> bool:
    """Whether the value of a member named `key` is a URL the gateway rewrites."""
    lk = key.lower()
    return lk not in _BROWSER_KEYS and (lk.endswith(("url", "urls")) or lk in _URL_KEYS)


def _written_url_key(raw_key: str) -> bool:
    """`url_key` for a key as it is written in the document (escapes undone)."""
    try:
        text = json.loads('"' + raw_key + '"') if "\\" in raw_key else raw_key
    except ValueError:
        return False
    return url_key(text)


# Keys come from upstream data: the few that repeat are remembered, within bounds.
_is_url_key: Memo[str, bool] = Memo(_written_url_key, size=4096, longest=128)


def _escaped(text: str, quote: int) -> bool:
    """Whether the `"` at `quote` is escaped (an odd run of backslashes before it)."""
    i = quote - 1
    while i >= 0 and text[i] == "\\":
        i -= 1
    return (quote - 1 - i) % 2 == 1


def _string_end(text: str, opening: int) -> int:
    """The index just past the closing quote of the string opened at `opening`."""
    end = text.find('"', opening + 1)
    if text[end - 1] == "\\":
        m = _STRING_REST.match(text, opening + 1)
        assert m is not None  # the document is valid JSON
        return m.end()
    return end + 1


def _value_end(text: str, start: int) -> int:
    """The index just past the object or array starting at `start` (linear in its size)."""
    depth = 0
    for m in _TOKEN.finditer(text, start):
        token = m.group()
        if token in ("{", "["):
            depth += 1
        elif token in ("}", "]"):
            depth -= 1
            if depth == 0:
                return m.end()
    raise ValueError("unbalanced JSON")  # unreachable for a validated document


def _key_before(text: str, colon: int) -> str | None:
    """The key (as written) of the member whose `:` is at `colon`, or None."""
    k = colon - 1
    while text[k] in _WS_CHARS:
        k -= 1
    if text[k] != '"':
        return None
    start = text.rfind('"', 0, k)
    while start > 0 and _escaped(text, start):
        start = text.rfind('"', 0, start)
    return text[start + 1 : k] if start >= 0 else None


def _browser_links(text: str, lowered: str) -> list[tuple[int, int]]:
    """The spans of the `web` and `html` link objects, sorted, outermost only."""
    spans: list[tuple[int, int]] = []
    for name, pattern in _LINKS:
        if name not in lowered:
            continue
        for m in pattern.finditer(lowered):
            if not _escaped(text, m.start()):
                brace = m.start(1)
                spans.append((m.start(), m.end() if brace < 0 else _value_end(text, brace)))
    spans.sort()
    outer: list[tuple[int, int]] = []
    for span in spans:
        if not outer or span[0] >= outer[-1][1]:
            outer.append(span)
    return outer


def _array_urls(text: str) -> set[int]:
    """Opening quotes of the strings in arrays under URL keys (see the module doc)."""
    found: set[int] = set()
    for m in _ARRAY.finditer(text):
        j = m.start() - 1
        while j >= 0 and text[j] in _WS_CHARS:
            j -= 1
        if j < 0 or text[j] != ":":  # not `"key": [`
            continue
        key = _key_before(text, j)
        if key is None or not _is_url_key[key]:
            continue
        pos = m.end()
        while True:
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos] == '"':
                found.add(pos)
                pos = _string_end(text, pos)
            else:
                scalar = _SCALAR.match(text, pos)
                if scalar is None:  # `]`, or an object or array: stop here
                    break
                pos = scalar.end()
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos] != ",":
                break
            pos += 1
    return found


def rewrite_json(raw: bytes, map_url: Mapper, public: str) -> Generator[None, None, bytes | Skip]:
    """See the module docstring. `map_url(url, public)` answers the gateway URL for an
    Azure DevOps URL, made of `public` and parts of `url` only."""
    first = _WS_BYTES.match(raw).end()  # type: ignore[union-attr]
    if first == len(raw):
        return Skip("not_json")
    if raw[first] not in b"{[":
        return Skip("top_level_scalar")
    try:
        text = raw.decode("utf-8")  # JSON on the wire is UTF-8 (RFC 8259 section 8.1)
    except UnicodeDecodeError:
        return Skip("invalid_utf8")
    try:
        _VALIDATE.decode(raw)
    except msgspec.DecodeError:
        return Skip("not_json")
    except RecursionError:
        return Skip("too_deep")
    yield
    lowered = text.lower()
    if len(lowered) != len(text):  # a few characters change length in lower case
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    links = _browser_links(text, lowered)
    arrays: set[int] | None = None  # found when a candidate first needs them
    yield
    out: list[str] = []
    last = 0
    link = 0  # index of the next browser link span that can hold a candidate
    n_links = len(links)
    seen = 0
    is_url_key = _is_url_key
    ws = _WS_CHARS
    # The gateway URL of a string without escapes is `public` and parts of that string:
    # it needs no escaping unless `public` itself does.
    safe = _UNSAFE.search(public) is None
    for m in _CANDIDATE.finditer(lowered):
        seen += 1
        if seen % SLICE == 0:
            yield
        p = m.start()
        while link < n_links and links[link][1] <= p:
            link += 1
        if link < n_links and links[link][0] <= p:
            continue  # inside a `web` or `html` link
        if text[p - 1] == "\\" and _escaped(text, p):
            continue  # `\"http` inside some other string
        end = text.find('"', p + 1) + 1
        if text[end - 2] == "\\":
            end = _string_end(text, p)
        if text[p - 1] == ":" and text[p - 2] == '"' and text[p - 3] != "\\":
            # "key":"http..." as Azure DevOps writes it
            k = text.rfind('"', 0, p - 2)
            key = text[k + 1 : p - 2] if text[k - 1] != "\\" else _key_before(text, p - 1)
        else:
            j = p - 1
            while text[j] in ws:
                j -= 1
            if text[j] == ":":  # "key" : "http..."
                key = _key_before(text, j)
            else:
                if arrays is None:
                    arrays = _array_urls(text) if "[" in text else set()
                if p not in arrays:
                    continue
                key = _IN_URL_ARRAY
        if key is None:
            continue
        if key is not _IN_URL_ARRAY and not is_url_key[key]:
            continue
        token = text[p + 1 : end - 1]
        if "\\" in token:
            mapped = _map_escaped(text[p:end], map_url, public)
        else:
            mapped = map_url(token, public)
            if mapped is not None:
                mapped = '"' + mapped + '"' if safe else _dump(mapped)
        if mapped is None:
            continue
        out.append(text[last:p])
        out.append(mapped)
        last = end
    if not out:
        return raw
    out.append(text[last:])
    return "".join(out).encode("utf-8", "surrogatepass")


def _dump(value: str) -> str | None:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a lone surrogate from a `\ud800` escape
        return None


def _map_escaped(token: str, map_url: Mapper, public: str) -> str | None:
    """The new JSON string for a string token written with escapes, or None."""
    try:
        value = json.loads(token)
    except ValueError:
        return None
    mapped = map_url(value, public)
    return None if mapped is None else _dump(mapped)
