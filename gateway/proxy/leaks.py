"""The gateway's own upstream credential never reaches a client.

Upstream answers are untrusted: an LFS server that pre-authorizes its actions, an
error page or a diagnostic header could echo back the credential the gateway
injected. Before an answer goes to the client:

- `scrub_headers` drops every response header whose value contains it;
- `scrub_body` searches a body the forwarder holds whole (buffered for rewriting,
  or small enough to have arrived with its headers), decompressed if need be:
  from JSON it drops every string (member or list item) that contains it
  (`scrub_doc`), elsewhere it replaces it (`scrub_bytes`).

A body streamed through (larger than `limits.rewrite_max_bytes`, or not whole
when its headers arrived and of a kind the rewriter does not read) is not searched.

`forms(header_value)` is what counts as the credential: the `Authorization` value,
its token after the scheme, and for Basic the password it encodes. Forms shorter
than MIN_LENGTH are not searched for (they would match unrelated text).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import orjson
from multidict import CIMultiDict

from gateway.proxy.rewrite import encoding as enc
from gateway.proxy.search import contains_any

log = logging.getLogger("azdo_gateway.proxy")

MIN_LENGTH = 8
REMOVED = b"[removed by azdo-gateway]"
_JSON = re.compile(r"^\s*(application|text)/([a-z0-9.+-]*\+)?json\s*(;|$)", re.I)


def forms(header_value: str) -> tuple[bytes, ...]:
    scheme, _, token = header_value.partition(" ")
    found = {header_value, token.strip()}
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        found.add(decoded.partition(":")[2])
    return tuple(sorted((f.encode() for f in found if len(f) >= MIN_LENGTH), key=len))


def scrub_headers(headers: CIMultiDict[str], secrets: tuple[bytes, ...]) -> None:
    """Drop every header name one of whose values holds a secret (all its fields)."""
    if not secrets:
        return
    texts = _texts(secrets)
    # One search over all the values first: an answer almost never carries one.
    joined = "\n".join(headers.values())
    if not any(t in joined for t in texts):
        return
    names = {k.lower(): k for k, v in headers.items() if any(t in v for t in texts)}
    for name in names.values():
        log.warning("upstream answer header %s carried the gateway's credential: dropped", name)
        headers.popall(name)


@functools.lru_cache(maxsize=256)
def _texts(secrets: tuple[bytes, ...]) -> tuple[str, ...]:
    return tuple(s.decode() for s in secrets)


def scrub_doc(doc: Any, secrets: tuple[bytes, ...]) -> bool:
    """Remove every string holding a secret from parsed JSON, in place. True if any."""
    texts = tuple(s.decode() for s in secrets)
    changed = [False]

    def holds(value: Any) -> bool:
        return isinstance(value, str) and any(t in value for t in texts)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in [k for k, v in node.items() if holds(v) or holds(k)]:
                del node[key]
                changed[0] = True
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            kept = [v for v in node if not holds(v)]
            if len(kept) != len(node):
                node[:] = kept
                changed[0] = True
            for value in node:
                walk(value)

    walk(doc)
    if changed[0]:
        log.warning("upstream answer body carried the gateway's credential: removed")
    return changed[0]


def scrub_bytes(body: bytes, secrets: tuple[bytes, ...]) -> bytes:
    for secret in reversed(secrets):  # longest first: a shorter form may be inside it
        if secret in body:
            log.warning("upstream answer body carried the gateway's credential: removed")
            body = body.replace(secret, REMOVED)
    return body


def scrub_body(
    body: bytes, secrets: tuple[bytes, ...], headers: Mapping[str, str], limit: int
) -> bytes:
    """`body` (as it goes to the client) without the secrets, in the same encoding;
    the very same bytes when it holds none (or cannot be decoded to look)."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    if encoding not in enc.ENCODINGS:
        return body
    try:
        raw = enc.decode(body, encoding, max(limit, len(body)))
    except enc.BadEncoding:
        return body
    if not contains_any(raw, secrets):
        return body
    out = None
    if _JSON.match(headers.get("Content-Type", "")):
        try:
            # numbers kept as written, as the rewriter's tree kinds do
            doc = json.loads(raw, parse_float=orjson.Fragment, parse_int=orjson.Fragment)
            if isinstance(doc, dict | list):
                scrub_doc(doc, secrets)
                out = orjson.dumps(doc)
        except (ValueError, RecursionError, orjson.JSONEncodeError):
            out = None
    if out is None or contains_any(out, secrets):
        out = scrub_bytes(raw, secrets)
    return enc.encode(out, encoding)
