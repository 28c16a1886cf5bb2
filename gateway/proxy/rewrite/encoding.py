"""Content encodings a rewritable body may come in: identity, gzip and deflate.

`decode(body, encoding, limit)` inflates (refusing past `limit` bytes, so a
small compressed body cannot become a large one in memory); `encode(body,
encoding)` compresses the rewritten body the same way again.
"""

from __future__ import annotations

import gzip
import zlib

ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})


class BadEncoding(ValueError):
    """The body is not what its Content-Encoding says, or inflates past the limit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(body: bytes, encoding: str, limit: int) -> bytes:
    """Decompress `body`; raise BadEncoding if it is broken or inflates past `limit`."""
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
            raise BadEncoding("bad_compression") from None
        if len(out) > limit or d.unconsumed_tail:
            raise BadEncoding("too_large")
        if not d.eof:
            raise BadEncoding("bad_compression")
        return out
    raise BadEncoding("bad_compression")  # pragma: no cover - the loop always returns


def encode(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body, compresslevel=5)
    if encoding == "deflate":
        return zlib.compress(body, 5)
    return body
