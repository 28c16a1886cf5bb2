"""Brute-force slowdown: failed authentications counted per source address.

Takes the source address of a request. `check()` raises TooManyRequests (429,
reason `too_many_failed_authentications`, with `Retry-After`) while that
source has had `max_failures` failed authentications within `window_s`
seconds of its first one; `failed()` counts one more. Other sources are not
affected. IPv6 sources are counted per /64, since one host usually owns one.
Memory is bounded: at most `max_sources` sources are tracked (least recently
used ones are dropped first), and a source is forgotten when its window ends.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from cachetools import TTLCache

from gateway.errors import TooManyRequests

MAX_FAILURES = 20
WINDOW_S = 60.0
MAX_SOURCES = 100_000


def source_key(remote: str | None) -> str:
    """The bucket a source address counts in: the address, or its /64 for IPv6."""
    if not remote:
        return "-"
    if ":" not in remote and remote.count(".") == 3:
        return remote  # IPv4, as the transport reports it
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return remote[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class FailureThrottle:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        max_sources: int = MAX_SOURCES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        # source -> [failures, first failure time]; the entry expires window_s after
        # its first failure (mutating the list in place does not extend it).
        self._failures: TTLCache[str, list[float]] = TTLCache(
            maxsize=max_sources, ttl=window_s, timer=clock
        )
        self._last_failure = -math.inf  # when failed() was last called

    def __len__(self) -> int:
        return len(self._failures)

    def check(self, remote: str | None) -> None:
        """Raise TooManyRequests if this source is being slowed down."""
        # The usual case: no failure anywhere within the window. Every entry expires
        # window_s after its first failure, which is no later than the last failure,
        # so none is live now. (Cheaper than asking the cache, which expires entries.)
        if self._clock() - self._last_failure >= self._failures.ttl:
            return
        entry = self._failures.get(source_key(remote))
        if entry is not None and entry[0] >= self.max_failures:
            retry_after = entry[1] + self.window_s - self._clock()
            raise TooManyRequests(
                f"too many failed authentications from this address; retry in"
                f" {max(1, round(retry_after))} s",
                reason="too_many_failed_authentications",
                retry_after=max(retry_after, 1.0),
            )

    def failed(self, remote: str | None) -> None:
        """Count one failed authentication from this source."""
        key = source_key(remote)
        entry = self._failures.get(key)
        if entry is None:
            self._failures[key] = [1, self._clock()]
        else:
            entry[0] += 1
        self._last_failure = self._clock()  # not before the entry's insertion
