"""`Memo`: a pure function's answers remembered for the keys a hot path sees again.

Clients and Azure DevOps send the same few header names, Content-Types and
`Connection` values on every message, and the same JSON keys in every answer,
so the request path looks each up in a `Memo` instead of working it out
again. A Memo is bounded, since the keys come from the network: it keeps at
most `size` keys of at most `longest` characters (or bytes) and works the
others out each time. It never evicts: the keys seen first are the common
ones, and a flood of made-up ones only costs its own lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import TypeVar

K = TypeVar("K", bound=Sized)
V = TypeVar("V")


class Memo(dict[K, V]):
    """`memo[key]` is `compute(key)`, remembered within the bounds."""

    def __init__(self, compute: Callable[[K], V], *, size: int = 1024, longest: int = 64) -> None:
        super().__init__()
        self.compute = compute
        self.size = size
        self.longest = longest

    def __missing__(self, key: K) -> V:
        value = self.compute(key)
        if len(key) <= self.longest and len(self) < self.size:
            self[key] = value
        return value
