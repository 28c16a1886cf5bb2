"""`contains_any`: whether a body holds any of some byte strings.

The forwarder searches every body it holds whole for the gateway's credential
(`gateway.proxy.leaks`) and for the host names whose URLs it rewrites
(`gateway.proxy.rewrite`). It searches with `bytes.find`, not `in`: on bytes,
`in` first tries its operand as a byte value and builds, then drops, a
TypeError for every bytes one (CPython 3.11), which costs more than the
search of a small body.
"""

from __future__ import annotations

from collections.abc import Iterable


def contains_any(data: bytes, needles: Iterable[bytes]) -> bool:
    for needle in needles:
        if data.find(needle) != -1:
            return True
    return False
