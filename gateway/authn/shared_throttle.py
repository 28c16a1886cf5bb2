"""The failed-authentication throttle for the whole fleet (`state.backend: redis`).

Same contract as `FailureThrottle` (keyed by the source string the caller
gives, counted per `source_key`), with the counts in Redis: 20 failures from
one source within 60 s of its first, on any mix of workers and replicas, get
that source 429 `too_many_failed_authentications` on every one of them, for
every credential it sends: a wrong one when its failure is counted, a valid
one at its admission (gateway.shared_limits checks the count in the same
Redis call as the client's rate limit). Counts are kept in the process too; while Redis is
unavailable the process's own counts decide (a brute force is still slowed,
per process), whatever `state.on_error` says: no legitimate source is refused
for Redis being down.
"""

from __future__ import annotations

from gateway.authn.throttle import FailureThrottle, source_key
from gateway.errors import TooManyRequests
from gateway.state import RedisStore, StateUnavailable


def slowed_down(left: float) -> TooManyRequests:
    return TooManyRequests(
        f"too many failed authentications from this address; retry in {max(1, round(left))} s",
        reason="too_many_failed_authentications",
        retry_after=max(left, 1.0),
    )


class SharedThrottle:
    def __init__(self, store: RedisStore, local: FailureThrottle) -> None:
        self.store = store
        self.local = local

    def check(self, remote: str | None) -> None:
        """Before authentication: nothing while Redis answers (the fleet's count is
        checked with the client's admission, in the same Redis call: one round trip
        per request); this process's own count while it does not."""
        if not self.store.available:
            self.local.check(remote)

    async def failed(self, remote: str | None) -> None:
        """Count one failed authentication from this source; raise TooManyRequests
        once the fleet's count is past the limit (instead of the 401)."""
        self.local.failed(remote)
        try:
            failures, left = await self.store.failed_authentication(
                source_key(remote), self.local.window_s
            )
        except StateUnavailable:
            self.local.check(remote)
            return
        if failures > self.local.max_failures:
            raise slowed_down(left)
