"""Request ids: the X-Request-ID the gateway gives a request that brings none."""

from __future__ import annotations

import os


class RequestIds:
    """Request ids: version-4 UUIDs as text, unique per process without a system call.

    Of a UUID's 122 random bits, 74 are drawn once per process and 48 are a
    counter (the last 12 hex digits), so an id costs an addition and a format.
    A forked process draws new random bits (`os.register_at_fork`), so no two
    processes share ids. A request id must be unique, not unguessable: it names
    a request in logs.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        r = int.from_bytes(os.urandom(10)) >> 6  # the 74 random bits: 48 + 12 + 14
        # time_low, time_mid | version 4, time_hi | variant 0b10, clock_seq | node: the counter
        h = f"{r >> 26:012x}{0x4000 | r >> 14 & 0xFFF:04x}{0x8000 | r & 0x3FFF:04x}"
        self._prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
        self._count = int.from_bytes(os.urandom(6)) & _COUNTER_MASK

    def __call__(self) -> str:
        self._count = count = (self._count + 1) & _COUNTER_MASK
        return f"{self._prefix}{count:012x}"


_COUNTER_MASK = (1 << 48) - 1
new_request_id = RequestIds()
