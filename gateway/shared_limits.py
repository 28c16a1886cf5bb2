"""Fleet-wide limits: the Limiter's per-client rules and upstream figures in Redis.

Takes the `RedisStore` and the process's `Limiter`. `admit(client)` takes one
request from the client's bucket (`per_minute`, `burst`) and, with
`max_concurrent`, a ticket among its requests in flight, in one Lua script
shared by every worker and replica; it raises TooManyRequests (429
`rate_limited` with Retry-After, or `too_many_concurrent_requests`) exactly as
the in-process limiter does. A ticket is held for at most `lease_s`, so the
requests of a replica that died stop counting by then.

Azure DevOps' throttling figures (X-RateLimit-*, Retry-After) that any
process sees are published (`publish`, only for answers that carry them) and
read back by every process at most every SYNC_S (`sync`, in the background),
so pacing and `upstream_throttled` act on what the whole fleet was told. The
usage shares that pick the heaviest clients stay per process: a load balancer
spreads each client's requests alike, so each process sees the same shares.

When the store is unavailable, limits fail open (`state.on_error: open`, the
default: the process's own limits apply, as with `backend: memory`, which
never refuse what the fleet's would allow; the failure is counted and logged)
or closed (503 `state_unavailable`); never a 500, never a wait beyond
`state.timeout_s`.
"""

from __future__ import annotations

import math
import secrets
import time

from gateway.authn.shared_throttle import slowed_down
from gateway.authn.throttle import MAX_FAILURES, source_key
from gateway.config.model import Client
from gateway.errors import StateUnavailableError, TooManyRequests
from gateway.limits import STALE_S, Limiter, _Credential, default_burst
from gateway.state import RedisStore, StateUnavailable
from gateway.tasks import spawn

SYNC_S = 1.0  # how old the fleet's upstream figures may be in this process
LOCAL = "local"  # the "ticket" of a request admitted by this process's own limiter


class SharedLimits:
    def __init__(self, store: RedisStore, limiter: Limiter, *, lease_s: float) -> None:
        self.store = store
        self.limiter = limiter
        self.lease_s = lease_s
        self._synced: dict[str, float] = {}  # credential -> when its sync was started

    async def admit(self, client: Client, source: str | None = None) -> str | None:
        """Admit one request of `client` from `source`; the ticket to release, if it
        holds one. The fleet's failed-authentication count of `source` is checked in
        the same Redis call (see gateway.authn.shared_throttle)."""
        rule = client.rate_limit
        where = source_key(source)
        if rule is None:
            try:
                failures, left = await self.store.failed_authentications(where)
            except StateUnavailable:
                return None  # the process's own count was checked at authentication
            if failures >= MAX_FAILURES:
                raise slowed_down(left)
            return None
        ticket = secrets.token_hex(8) if rule.max_concurrent is not None else ""
        try:
            code, retry = await self.store.admit(
                client.name,
                per_minute=rule.per_minute,
                burst=default_burst(rule),
                max_concurrent=rule.max_concurrent,
                ticket=ticket,
                lease_s=self.lease_s,
                source=where,
                max_failures=MAX_FAILURES,
            )
        except StateUnavailable as err:
            if self.store.fail_open:
                # this process's own bucket, as with `backend: memory`: never stricter
                # than the fleet's (it is not drawn on while Redis answers), and a
                # client hammering through an outage is still held to its limit per
                # process
                self.limiter.admit(client)
                return LOCAL if rule.max_concurrent is not None else None
            raise StateUnavailableError(
                f"the shared state backend is unavailable ({err.detail}) and state.on_error "
                f"is closed: client {client.name!r}'s rate limit cannot be checked"
            ) from None
        if code == 3:
            raise slowed_down(retry)
        if code == 1:
            raise TooManyRequests(
                f"client {client.name!r} already has {rule.max_concurrent} requests in "
                "flight (rate_limit.max_concurrent)",
                retry_after=1,
                reason="too_many_concurrent_requests",
            )
        if code == 2:
            raise TooManyRequests(
                f"client {client.name!r} is over its rate limit of {rule.per_minute} "
                f"requests per minute (burst {default_burst(rule)})",
                retry_after=max(retry, 0.001),
                reason="rate_limited",
            )
        return ticket or None

    def release(self, client: Client, ticket: str) -> None:
        if ticket is LOCAL:
            self.limiter.release(client)
        else:
            spawn(self._release(client.name, ticket), name="state-release")

    async def _release(self, client: str, ticket: str) -> None:
        try:
            await self.store.release(client, ticket)
        except StateUnavailable:
            pass  # the ticket's lease ends it

    # --- upstream figures ------------------------------------------------------

    def sync(self, credential: str) -> None:
        """Merge what the fleet was told about `credential`, if not done lately
        (in the background: the request does not wait)."""
        now = time.monotonic()
        if now - self._synced.get(credential, -math.inf) < SYNC_S or not self.store.available:
            return
        self._synced[credential] = now
        spawn(self._sync(credential), name="state-sync")

    async def _sync(self, credential: str) -> None:
        try:
            figures = await self.store.get_upstream(credential)
        except StateUnavailable:
            return
        if figures:
            merge(self.limiter._cred(credential), figures, self._offset())

    def publish(self, credential: str) -> None:
        """Tell the fleet what Azure DevOps just said about `credential`."""
        cred = self.limiter._credentials.get(credential)
        if cred is None or not self.store.available:
            return
        spawn(self._publish(credential, figures(cred, self._offset())), name="state-publish")

    async def _publish(self, credential: str, values: list[str]) -> None:
        try:
            await self.store.put_upstream(credential, values, STALE_S)
        except StateUnavailable:
            pass

    def _offset(self) -> float:
        """Wall-clock time minus the limiter's clock: figures travel as wall-clock times."""
        return time.time() - self.limiter.clock()


def _wall(t: float, offset: float) -> str:
    return "" if not math.isfinite(t) else repr(t + offset)


def figures(cred: _Credential, offset: float) -> list[str]:
    """limit, remaining, updated, delay, delay_updated, blocked_until ('' when unknown)."""
    known = cred.limit is not None and cred.remaining is not None
    return [
        repr(cred.limit) if known else "",
        repr(cred.remaining) if known else "",
        _wall(cred.updated, offset) if known else "",
        repr(cred.delay) if math.isfinite(cred.delay_updated) else "",
        _wall(cred.delay_updated, offset),
        _wall(cred.blocked_until, offset) if cred.blocked_until > 0 else "",
    ]


def merge(cred: _Credential, stored: dict[str, float], offset: float) -> None:
    """Take each stored figure that is newer than this process's own."""
    updated = stored.get("updated")
    if updated is not None and "limit" in stored and "remaining" in stored:
        if updated - offset > cred.updated:
            cred.limit, cred.remaining = stored["limit"], stored["remaining"]
            cred.updated = updated - offset
    delay_updated = stored.get("delay_updated")
    if (
        delay_updated is not None
        and "delay" in stored
        and delay_updated - offset > cred.delay_updated
    ):
        cred.delay, cred.delay_updated = stored["delay"], delay_updated - offset
    blocked = stored.get("blocked_until")
    if blocked is not None:
        cred.blocked_until = max(cred.blocked_until, blocked - offset)
