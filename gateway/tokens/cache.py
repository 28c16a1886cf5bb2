"""One cached upstream token per credential (per user for on-behalf-of): a `TokenSlot`.

Takes a `fetch` coroutine that asks the identity provider; gives the current
`UpstreamToken`. Rules:

- Warm path: `peek(now)` returns the cached token while it is valid. It takes
  no lock and never awaits; at most it starts a background refresh.
- Single flight: one acquisition per slot at a time; every request that finds
  no valid token awaits that same acquisition (bounded by `wait_s`).
- Refresh ahead: a token is renewed `refresh_ahead_s` before it expires (at most
  half its lifetime before), or after `refresh_in` when the provider sends it;
  a proactive slot (app credentials) does this on a timer, so no request waits.
- Outages: while the current token is valid, it keeps being served and
  refreshes are retried with exponential backoff and jitter (or the provider's
  Retry-After). Once no valid token remains, requests fail fast with
  `CredentialUnavailable` (503, Retry-After) instead of piling up.
- A token is never served after `expires_at` minus a small skew.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.errors import CredentialUnavailable
from gateway.tasks import spawn
from gateway.tokens.base import IssuedToken, TokenAcquisitionError, TokenMetrics
from gateway.types import UpstreamToken

log = logging.getLogger("azdo_gateway.tokens")

Fetch = Callable[[str | None], Awaitable[IssuedToken]]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    refresh_ahead_s: float = 300.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    wait_s: float = 15.0  # longest a request waits for an acquisition in flight
    max_skew_s: float = 30.0  # stop serving a token this long before expiry (<= 10% of life)
    reinvalidate_s: float = 30.0  # a token replaced after a 401 is not dropped again sooner

    def refresh_at(self, token: IssuedToken) -> float:
        ahead = min(self.refresh_ahead_s, token.lifetime / 2)
        at = token.expires_at - ahead
        if token.refresh_in is not None and token.refresh_in > 0:
            at = min(at, token.acquired_at + token.refresh_in)
        return at

    def valid_until(self, token: IssuedToken) -> float:
        return token.expires_at - min(self.max_skew_s, token.lifetime / 10)

    def backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: between half and all of base * 2^(n-1)."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** min(failures - 1, 30))
        return ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


def _consume(future: asyncio.Future[UpstreamToken]) -> None:
    if not future.cancelled():
        future.exception()  # mark retrieved: no waiter is not an error


class TokenSlot:
    """The cached token of one credential (or one user of an on-behalf-of credential)."""

    __slots__ = (
        "credential", "key", "token", "valid_until", "refresh_at", "acquired", "failures",
        "next_attempt", "last_error", "user_assertion", "_fetch", "_policy", "_metrics",
        "_proactive", "_clock", "_inflight", "_timer", "_closed", "_dropped_at", "_first",
        "_inflight_since",
    )  # fmt: skip

    def __init__(
        self,
        credential: str,
        fetch: Fetch,
        policy: RefreshPolicy,
        metrics: TokenMetrics,
        *,
        key: tuple[str, ...] = (),
        proactive: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential = credential
        self.key = key
        self.token: UpstreamToken | None = None
        self.valid_until = 0.0
        self.refresh_at = 0.0
        self.acquired = 0  # successful acquisitions so far
        self.failures = 0  # consecutive failed acquisitions
        self.next_attempt = 0.0
        self.last_error: TokenAcquisitionError | None = None
        self.user_assertion: str | None = None  # latest caller token (on-behalf-of)
        self._fetch = fetch
        self._policy = policy
        self._metrics = metrics
        self._proactive = proactive
        self._clock = clock
        self._inflight: asyncio.Future[UpstreamToken] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._dropped_at = float("-inf")
        self._first = asyncio.Event()  # set once a token was ever acquired
        self._inflight_since = 0.0

    # --- reading ---------------------------------------------------------------

    def peek(self, now: float) -> UpstreamToken | None:
        """The valid cached token, or None. Never waits."""
        token = self.token
        if token is None or now >= self.valid_until:
            return None
        if now >= self.refresh_at and self._inflight is None and now >= self.next_attempt:
            self._begin()
        return token

    async def get(self) -> UpstreamToken:
        """The cached token, or the one being acquired; CredentialUnavailable if none."""
        now = self._clock()
        token = self.peek(now)
        if token is not None:
            return token
        inflight = self._inflight
        if inflight is None:
            if now < self.next_attempt:
                raise self.unavailable(now)
            inflight = self._begin()
        elif self.failures:
            raise self.unavailable(now)  # failing already: do not queue behind a retry
        elif now - self._inflight_since > self._policy.wait_s:
            raise self._stalled()  # no answer for long already: do not queue behind it
        try:
            return await asyncio.wait_for(asyncio.shield(inflight), self._policy.wait_s)
        except TokenAcquisitionError:
            raise self.unavailable(self._clock()) from None
        except TimeoutError:
            raise self._stalled() from None

    def _stalled(self) -> CredentialUnavailable:
        return CredentialUnavailable(
            f"upstream credential {self.credential!r} is unavailable: the identity "
            f"provider has not answered within {self._policy.wait_s:g}s",
            retry_after=self._policy.backoff_base_s,
        )

    async def first_token(self) -> None:
        """Return once this slot has acquired a token at least once."""
        await self._first.wait()

    def unavailable(self, now: float) -> CredentialUnavailable:
        err = self.last_error
        why = f"identity provider error: {err.reason}" if err else "no token yet"
        retry = self.next_attempt - now if self.next_attempt > now else self._policy.backoff_base_s
        return CredentialUnavailable(
            f"upstream credential {self.credential!r} has no valid token ({why}); retry later",
            retry_after=retry,
        )

    # --- acquiring ---------------------------------------------------------------

    def start(self) -> None:
        """Acquire in the background (proactive slots at gateway start), unless an
        inherited token is still fresh: then refresh it when due."""
        if self._inflight is not None or self._closed:
            return
        if self.token is not None and self._clock() < self.refresh_at:
            self._schedule(self.refresh_at)
        else:
            self._begin()

    def inherit(self, other: TokenSlot) -> None:
        """Take over the cached token of `other` (same credential, previous configuration)."""
        if other.token is not None and other.token.key == self.key:
            self.token = other.token
            self.valid_until = other.valid_until
            self.refresh_at = other.refresh_at
            self.acquired = max(self.acquired, other.acquired)
            if self.acquired:
                self._first.set()
            self.user_assertion = other.user_assertion

    def _begin(self) -> asyncio.Future[UpstreamToken]:
        future: asyncio.Future[UpstreamToken] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._inflight = future
        self._inflight_since = self._clock()
        spawn(self._run(future), name=f"token:{self.credential}")
        return future

    async def _run(self, future: asyncio.Future[UpstreamToken]) -> None:
        try:
            issued = await self._fetch(self.user_assertion)
        except TokenAcquisitionError as err:
            self._inflight = None
            self._failed(err)
            future.set_exception(err)
        except asyncio.CancelledError:
            self._inflight = None
            future.cancel()
            raise
        except Exception as exc:  # a bug here, not the identity provider: report, keep serving
            log.exception("credential %s: token acquisition crashed", self.credential)
            crash = TokenAcquisitionError("internal_error", type(exc).__name__)
            self._inflight = None
            self._failed(crash)
            future.set_exception(crash)
        else:
            self._inflight = None
            future.set_result(self._install(issued))

    def _install(self, issued: IssuedToken) -> UpstreamToken:
        token = UpstreamToken(
            "Bearer " + issued.access_token, self.credential, issued.expires_at, key=self.key
        )
        self.token = token
        self.valid_until = self._policy.valid_until(issued)
        self.refresh_at = self._policy.refresh_at(issued)
        self.acquired += 1
        self._first.set()
        self.failures = 0
        self.next_attempt = 0.0
        self.last_error = None
        self._metrics.token_acquired(self.credential, "ok")
        if self._proactive:
            self._metrics.token_expiry(self.credential, issued.expires_at)
            now = self._clock()
            log.info(
                "credential %s: token acquired, expires in %.0fs, refresh in %.0fs",
                self.credential, issued.expires_at - now, self.refresh_at - now,
            )  # fmt: skip
        self._schedule(self.refresh_at)
        return token

    def _failed(self, err: TokenAcquisitionError) -> None:
        now = self._clock()
        self.failures += 1
        delay = err.retry_after if err.retry_after is not None else None
        delay = max(delay or 0.0, self._policy.backoff(self.failures))
        self.next_attempt = now + delay
        self.last_error = err
        self._metrics.token_acquired(self.credential, err.reason)
        serving = self.token is not None and now < self.valid_until
        log.warning(
            "credential %s: token acquisition failed (%s, attempt %d, retry in %.1fs, %s): %s",
            self.credential, err.reason, self.failures, delay,
            "serving the current token" if serving else "no valid token", err.message,
        )  # fmt: skip
        self._schedule(self.next_attempt)

    def _schedule(self, at: float) -> None:
        if not self._proactive or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, at - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self._closed and self._inflight is None:
            self._begin()

    # --- dropping ------------------------------------------------------------------

    def invalidate(self, token: UpstreamToken) -> bool:
        """Upstream rejected `token`: drop it unless it was already replaced, or the
        token before it was dropped less than `reinvalidate_s` ago (a fresh token
        rejected again means the identity lacks access; refetching would not help)."""
        current = self.token
        if current is None or current.header_value != token.header_value:
            return False
        now = self._clock()
        if now - self._dropped_at < self._policy.reinvalidate_s:
            return False
        self._dropped_at = now
        self.token = None
        self.valid_until = 0.0
        log.warning("credential %s: upstream rejected the token; acquiring a new one",
                    self.credential)  # fmt: skip
        if self._proactive and self._inflight is None and not self._closed:
            self._begin()
        return True

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
