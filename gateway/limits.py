"""Protection: overload shedding, per-client rate limits, upstream throttling.

Takes the authenticated client (with its policy's `rate_limit`) and the
upstream answers; rejects with

- 503 `overloaded` when more than `limits.max_inflight` requests are in
  flight in this process (shed early, before authentication does any work);
- 429 `rate_limited` when the client's token bucket (`per_minute`, refilled
  continuously, holding at most `burst`) is empty, with `Retry-After` the
  seconds until the next request would pass;
- 429 `too_many_concurrent_requests` beyond the client's `max_concurrent`;
- 429 `upstream_throttled` for the heaviest clients of an upstream credential
  while Azure DevOps has told that credential to back off (`Retry-After`).

Azure DevOps throttles per identity, and the gateway funnels many clients into
one credential. It reports `X-RateLimit-Limit`/`-Remaining`/`-Reset`/`-Delay`
(see "Rate and usage limits", learn.microsoft.com/azure/devops/integrate/
concepts/rate-limits). `Limiter.observe()` keeps the latest of those per
credential and a decaying count of each client's requests on it. When a
credential nears its limit (under a quarter left, or upstream delaying),
`pace()` delays the clients using more than their fair share, heaviest
longest, so that one noisy tool cannot get everyone throttled.

Counters are per process (per worker, per replica) with `state.backend:
memory`; with `redis`, `shared` (gateway.shared_limits) keeps the client
buckets and concurrency and the upstream figures for the whole fleet. See
docs/operations.md.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.config.model import Client, RateLimit
from gateway.errors import Overloaded, TooManyRequests
from gateway.types import RequestContext

if TYPE_CHECKING:
    from gateway.observability.metrics import Metrics
    from gateway.shared_limits import SharedLimits

Clock = Callable[[], float]

NEAR_LIMIT = 0.25  # pressure starts when less than this fraction of the limit remains
MAX_DELAY_S = 2.0  # longest pause imposed on the heaviest client of a strained credential
HALF_LIFE_S = 60.0  # how fast a client's share of a credential's traffic is forgotten
STALE_S = 300.0  # upstream figures older than this (Azure DevOps' window) are ignored
RESCALE_S = 10 * HALF_LIFE_S  # usage weights grow 2x per half-life: rebase them before long
FORGOTTEN = 0.01  # a client whose decayed count fell below this no longer counts
RATE_LIMIT_HEADERS = (
    "x-ratelimit-resource",
    "x-ratelimit-delay",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
)


def default_burst(rule: RateLimit) -> int:
    """`burst` when the policy omits it: ten seconds' worth, at least one request."""
    return rule.burst or max(1, math.ceil(rule.per_minute / 6))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    last: float


@dataclass(slots=True)
class _Credential:
    """What Azure DevOps last told us about one upstream credential."""

    limit: float | None = None
    remaining: float | None = None
    updated: float = -math.inf  # when limit/remaining were reported
    delay: float = 0.0
    delay_updated: float = -math.inf
    blocked_until: float = 0.0
    # client -> its requests on this credential, each weighing 0.5 ** (age / HALF_LIFE_S),
    # stored scaled to `usage_at`: a count made at t adds 2 ** ((t - usage_at) / HALF_LIFE_S).
    # Counting is then one addition however many clients share the credential (all
    # weights decay alike, so shares are ratios of stored weights); the weights are
    # brought back to `now` every RESCALE_S, and when pressure asks for shares.
    usage: dict[str, float] = field(default_factory=dict)
    usage_at: float = 0.0
    counted_at: float = 0.0  # the last count


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        n = float(value)
    except ValueError:
        return None
    return n if math.isfinite(n) and n >= 0 else None


class Limiter:
    """Process-wide limit state; survives reloads (rules are read per request)."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.inflight = 0
        self._buckets: dict[str, _Bucket] = {}
        self._concurrent: dict[str, int] = {}
        self._credentials: dict[str, _Credential] = {}
        self.shared: SharedLimits | None = None  # fleet-wide limits (state.backend: redis)

    # --- overload --------------------------------------------------------

    def enter(self, max_inflight: int) -> None:
        """Count a request in; shed it (503) when the process is full."""
        if self.inflight >= max_inflight:
            raise Overloaded(
                f"the gateway is handling {self.inflight} requests, its limit; retry shortly",
                headers={"Retry-After": "1"},
            )
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1

    # --- per client ------------------------------------------------------

    def admit(self, client: Client) -> None:
        """Take one request from the client's budget or raise TooManyRequests."""
        rule = client.rate_limit
        if rule is None:
            return
        now = self.clock()
        if rule.max_concurrent is not None:
            if self._concurrent.get(client.name, 0) >= rule.max_concurrent:
                raise TooManyRequests(
                    f"client {client.name!r} already has {rule.max_concurrent} requests in "
                    "flight (rate_limit.max_concurrent)",
                    retry_after=1,
                    reason="too_many_concurrent_requests",
                )
        rate, burst = rule.per_minute / 60.0, default_burst(rule)
        bucket = self._buckets.get(client.name)
        if bucket is None:
            bucket = self._buckets[client.name] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.last) * rate)
        bucket.last = now
        if bucket.tokens < 1.0:
            raise TooManyRequests(
                f"client {client.name!r} is over its rate limit of {rule.per_minute} "
                f"requests per minute (burst {burst})",
                retry_after=(1.0 - bucket.tokens) / rate,
                reason="rate_limited",
            )
        bucket.tokens -= 1.0
        if rule.max_concurrent is not None:
            self._concurrent[client.name] = self._concurrent.get(client.name, 0) + 1

    def release(self, client: Client) -> None:
        if client.rate_limit is not None and client.rate_limit.max_concurrent is not None:
            left = self._concurrent.get(client.name, 0) - 1
            if left > 0:
                self._concurrent[client.name] = left
            else:
                self._concurrent.pop(client.name, None)

    # --- upstream throttling ---------------------------------------------

    def _cred(self, credential: str) -> _Credential:
        cred = self._credentials.get(credential)
        if cred is None:
            now = self.clock()
            cred = self._credentials[credential] = _Credential(usage_at=now, counted_at=now)
        return cred

    def _count(self, cred: _Credential, client: str) -> None:
        now = self.clock()
        if now - cred.usage_at >= RESCALE_S:
            cred.counted_at = now
            self._rescale(cred)
        weight = 2.0 ** ((now - cred.usage_at) / HALF_LIFE_S)
        cred.usage[client] = cred.usage.get(client, 0.0) + weight
        cred.counted_at = now

    @staticmethod
    def _rescale(cred: _Credential) -> None:
        """Weights as decayed counts at the last count; forget the clients below FORGOTTEN."""
        decay = 0.5 ** ((cred.counted_at - cred.usage_at) / HALF_LIFE_S)
        cred.usage = {
            name: count
            for name, weight in cred.usage.items()
            if (count := weight * decay) >= FORGOTTEN
        }
        cred.usage_at = cred.counted_at

    def observe(
        self, credential: str, client: str, status: int | None, headers: Mapping[str, str]
    ) -> bool:
        """Record an upstream answer; True when it was a throttling 429."""
        cred = self._cred(credential)
        self._count(cred, client)
        if status != 429 and not headers:  # the usual answer: nothing to learn
            return False
        now = self.clock()
        limit = _number(headers.get("x-ratelimit-limit"))
        remaining = _number(headers.get("x-ratelimit-remaining"))
        if limit is not None and remaining is not None and limit > 0:
            cred.limit, cred.remaining, cred.updated = limit, remaining, now
        delay = _number(headers.get("x-ratelimit-delay"))
        if delay is not None:
            cred.delay, cred.delay_updated = delay, now
        if status != 429:
            return False
        retry = _number(headers.get("retry-after"))
        cred.blocked_until = max(cred.blocked_until, now + (retry if retry is not None else 5))
        return True

    def pressure(self, credential: str) -> float:
        """0: no sign of upstream limits; 1: upstream said back off."""
        cred = self._credentials.get(credential)
        if cred is None:
            return 0.0
        now = self.clock()
        if now < cred.blocked_until:
            return 1.0
        p = 0.5 if cred.delay > 0 and now - cred.delay_updated <= STALE_S else 0.0
        if cred.limit and cred.remaining is not None and now - cred.updated <= STALE_S:
            left = cred.remaining / cred.limit
            if left < NEAR_LIMIT:
                p = max(p, min(1.0, (NEAR_LIMIT - left) / NEAR_LIMIT))
        return p

    def delay_for(self, credential: str, client: str) -> float:
        """How long to hold this client's request; 0 for clients at or below fair share."""
        p = self.pressure(credential)
        cred = self._credentials.get(credential)
        if p == 0.0 or cred is None:
            return 0.0
        self._rescale(cred)
        if not cred.usage:
            return 0.0
        total = sum(cred.usage.values())
        share = cred.usage.get(client, 0.0) / total
        fair = 1.0 / len(cred.usage)
        if share < fair and len(cred.usage) > 1:
            return 0.0
        return p * MAX_DELAY_S * share / (max(cred.usage.values()) / total)

    def retry_after(self, credential: str) -> float:
        cred = self._credentials.get(credential)
        return max(0.0, cred.blocked_until - self.clock()) if cred else 0.0

    async def pace(self, credential: str, client: str) -> float:
        """Delay (or refuse, while upstream blocks the credential) a heavy client."""
        wait = self.delay_for(credential, client)
        if wait <= 0:
            return 0.0
        blocked = self.retry_after(credential)
        if blocked > 0:
            raise TooManyRequests(
                f"Azure DevOps is throttling credential {credential!r} and client "
                f"{client!r} is its heaviest user; retry later",
                retry_after=blocked,
                reason="upstream_throttled",
            )
        await asyncio.sleep(wait)
        return wait

    # --- the middleware's body -------------------------------------------

    async def guard(
        self,
        client: Client,
        ctx: RequestContext,
        call: Callable[[], Awaitable[web.StreamResponse]],
        metrics: Metrics,
    ) -> web.StreamResponse:
        """Run `call` (the rest of the pipeline) within the client's limits and
        learn from the upstream answer."""
        credential = client.credential
        shared = self.shared
        ticket = None
        if shared is None:
            self.admit(client)
        else:
            ticket = await shared.admit(client, ctx.source)
            shared.sync(credential)
        try:
            # (delay_for first: pace() is a coroutine, and is seldom needed)
            if self.delay_for(credential, client.name) > 0:
                if await self.pace(credential, client.name) > 0:
                    metrics.pressure_delay(credential, client.name)
            response = await call()
        finally:
            if shared is None:
                self.release(client)
            elif ticket is not None:
                shared.release(client, ticket)
        if ctx.upstream_status is not None:
            headers = response.headers  # case-insensitive; most answers have none of these
            seen = {
                name: headers.getall(name)[-1] for name in RATE_LIMIT_HEADERS if name in headers
            }
            ctx.upstream_rate_limit = seen
            if self.observe(credential, client.name, ctx.upstream_status, seen):
                metrics.throttled(credential, client.name)
            cred = self._credentials[credential]
            if cred.limit is not None and cred.remaining is not None and seen:
                metrics.upstream_rate_limit(credential, cred.remaining, cred.limit)
            if shared is not None and seen:
                shared.publish(credential)
        return response
