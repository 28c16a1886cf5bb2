"""The failed-authentication throttle for the whole fleet (`state.backend: redis`).

Same contract as `FailureThrottle` (keyed by the source string the caller
gives, counted per `source_key`), with the counts in Redis: 20 failures from
one source within 60 s of its first, on any mix of workers and replicas, get
that source 429 `too_many_failed_authentications` on every one of them, for
every credential it sends. Counts are kept in the process too; while Redis is
unavailable the process's own counts decide (a brute force is still slowed,
per process), whatever `state.on_error` says: no legitimate source is refused
for Redis being down.
"""

from __future__ import annotations

from gateway.authn.throttle import FailureThrottle, source_key
from gateway.errors import TooManyRequests
from gateway.state import RedisStore, StateUnavailable


class SharedThrottle:
    def __init__(self, store: RedisStore, local: FailureThrottle) -> None:
        self.store = store
        self.local = local

    async def check(self, remote: str | None) -> None:
        """Raise TooManyRequests if this source is being slowed down."""
        try:
            failures, left = await self.store.failed_authentications(source_key(remote))
        except StateUnavailable:
            self.local.check(remote)
            return
        if failures >= self.local.max_failures:
            raise TooManyRequests(
                f"too many failed authentications from this address; retry in"
                f" {max(1, round(left))} s",
                reason="too_many_failed_authentications",
                retry_after=max(left, 1.0),
            )

    async def failed(self, remote: str | None) -> None:
        """Count one failed authentication from this source."""
        self.local.failed(remote)
        try:
            await self.store.failed_authentication(source_key(remote), self.local.window_s)
        except StateUnavailable:
            pass
