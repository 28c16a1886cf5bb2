"""The Redis (or Valkey) state backend: one client per process, never a slow one.

Takes the `state` section. Every call is bounded by `state.timeout_s` (50 ms
by default; token calls, which are seldom and off the request path, by ten
times that, at least 0.5 s) and goes through a circuit breaker (one for
limits, one for tokens): after a failure (refused,
reset, timed out: a stopped or frozen Redis) the store answers
`StateUnavailable` at once, without touching the network, for a backoff that
grows from 0.25 s to 2 s; then a single call probes, and the first success
closes the breaker again, so a Redis that comes back is used again within
seconds, without a restart. The callers decide what an unavailable store
means (limits fail open or closed, tokens fall back to the process cache).
Failures are counted (`azdo_gateway_state_errors_total{operation}`) and
logged at most once per `WARN_EVERY_S`, without the URL (it may hold a
password).

Values that hold secrets go through `Sealer` (AES-GCM, bound to their key);
key names that would reveal a user or a source are HMACs (`Sealer.name`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config.model import State
from gateway.state import scripts
from gateway.state.crypto import Sealer, load_key

log = logging.getLogger("azdo_gateway.state")

T = TypeVar("T")
WARN_EVERY_S = 10.0
BACKOFF_FIRST_S = 0.25
BACKOFF_CAP_S = 2.0


class StateUnavailable(Exception):
    """The state backend did not answer (in time); `detail` is safe to show."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StateMetrics(Protocol):
    def state_error(self, operation: str) -> None: ...

    def set_state_up(self, up: bool) -> None: ...


class NoStateMetrics:
    def state_error(self, operation: str) -> None:
        return None

    def set_state_up(self, up: bool) -> None:
        return None


class Breaker:
    """Closed while calls succeed; open for a growing backoff after a failure; then
    half-open: one call may try, the others are refused until it is done."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def allow(self) -> bool:
        if not self.failures:
            return True
        if self.probing or self._clock() < self.open_until:
            return False
        self.probing = True
        return True

    def succeeded(self) -> bool:
        """Record a success; True when it closed an open breaker."""
        was_open = self.failures > 0
        self.failures, self.open_until, self.probing = 0, 0.0, False
        return was_open

    def failed(self) -> None:
        self.failures += 1
        self.probing = False
        backoff = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** min(self.failures - 1, 10))
        self.open_until = self._clock() + backoff


class RedisStore:
    """The state operations the gateway needs, on one Redis connection pool."""

    def __init__(
        self,
        state: State,
        *,
        metrics: StateMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sealer: Sealer | None = None,
    ) -> None:
        assert state.url is not None
        self.prefix = state.key_prefix
        self.timeout_s = state.timeout_s
        # Token calls are rare and off the request path (or on a request that waits for
        # a token anyway): a longer bound, so a busy moment does not cost a token request.
        self.token_timeout_s = max(0.5, 10 * state.timeout_s)
        self.fail_open = state.on_error == "open"
        self.sealer = sealer or Sealer(load_key(state))
        self.metrics: StateMetrics = metrics or NoStateMetrics()
        self.breaker = Breaker(clock)  # limits: every request
        self.token_breaker = Breaker(clock)  # tokens: seldom, with a longer bound
        self.last_error: str | None = None
        self._clock = clock
        self._warned_at = -math.inf
        self._suppressed = 0
        self.client: Redis = Redis.from_url(
            state.url.get_secret_value(),
            # the bound of each call is its lane's (asyncio.timeout in `_call`)
            socket_timeout=self.token_timeout_s,
            socket_connect_timeout=self.token_timeout_s,
            retry=Retry(NoBackoff(), 0),  # no retries: a failure opens the breaker instead
            health_check_interval=0,
        )
        register = self.client.register_script
        self._admit = register(scripts.ADMIT)
        self._fail = register(scripts.FAIL)
        self._failures = register(scripts.FAILURES)
        self._unlock = register(scripts.UNLOCK)
        self._upstream = register(scripts.UPSTREAM)

    # --- the guard around every call -------------------------------------------

    async def _call(
        self, operation: str, call: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        breaker = self.breaker if timeout_s is None else self.token_breaker
        if not breaker.allow():
            self.metrics.state_error(operation)  # each a limit not checked, a token not shared
            raise StateUnavailable(self.last_error or "state backend unavailable")
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await call()
        except (RedisError, OSError, TimeoutError) as err:
            self._failed(operation, err, timeout_s or self.timeout_s, breaker)
            raise StateUnavailable(self.last_error or "state backend unavailable") from None
        except BaseException:
            breaker.probing = False  # cancelled: let another call probe
            raise
        if breaker.succeeded() and breaker is self.breaker:
            self.last_error = None
            self.metrics.set_state_up(True)
            log.warning("state backend: available again")
        return result

    def _failed(
        self, operation: str, err: BaseException, timeout_s: float, breaker: Breaker
    ) -> None:
        was_up = breaker.failures == 0 and breaker is self.breaker
        breaker.failed()
        if isinstance(err, TimeoutError):
            what = f"no answer within {timeout_s:g}s"
        else:
            what = f"{type(err).__name__}: {err}"
        self.last_error = what[:200]
        self.metrics.state_error(operation)
        if was_up:
            self.metrics.set_state_up(False)
        now = self._clock()
        if now - self._warned_at >= WARN_EVERY_S:
            more = f" ({self._suppressed} more failures not logged)" if self._suppressed else ""
            action = "limits are per process" if self.fail_open else "limited requests get 503"
            log.warning(
                "state backend unavailable (%s, during %s): %s; tokens come from this "
                "process%s", self.last_error, operation, action, more,
            )  # fmt: skip
            self._warned_at, self._suppressed = now, 0
        else:
            self._suppressed += 1

    @property
    def available(self) -> bool:
        """False while the breaker is open (a call now would be refused at once)."""
        return self.breaker.failures == 0

    @property
    def tokens_available(self) -> bool:
        return self.token_breaker.failures == 0

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- limits ----------------------------------------------------------------

    async def admit(
        self,
        client: str,
        *,
        per_minute: float,
        burst: int,
        max_concurrent: int | None,
        ticket: str,
        lease_s: float,
        source: str = "",
        max_failures: int = 0,
    ) -> tuple[int, float]:
        """(0, 0) admitted; (1, 0) over max_concurrent; (2, seconds) over the rate;
        (3, seconds) `source` has `max_failures` failed authentications (checked
        first, in the same call: one round trip per request)."""
        keys = [self.key("rl", client), self.key("cc", client), self._failure_key(source)]
        args: list[str | int] = [repr(per_minute / 60_000.0), burst, max_concurrent or 0, ticket,
                int(lease_s * 1000), max_failures]  # fmt: skip
        code, ms = await self._call("admit", lambda: self._admit(keys, args))
        return int(code), int(ms) / 1000.0

    def _failure_key(self, source: str) -> str:
        return self.key("fa", self.sealer.name("source", source))

    async def release(self, client: str, ticket: str) -> None:
        await self._call("release", lambda: self.client.zrem(self.key("cc", client), ticket))

    async def failed_authentication(self, source: str, window_s: float) -> tuple[int, float]:
        """Count one failure from `source`: (failures in its window, seconds left)."""
        keys = [self._failure_key(source)]
        n, ms = await self._call("throttle", lambda: self._fail(keys, [int(window_s * 1000)]))
        return int(n), int(ms) / 1000.0

    async def failed_authentications(self, source: str) -> tuple[int, float]:
        keys = [self._failure_key(source)]
        n, ms = await self._call("throttle", lambda: self._failures(keys, []))
        return int(n), max(0, int(ms)) / 1000.0

    async def put_upstream(self, credential: str, figures: list[str], keep_s: float) -> None:
        keys = [self.key("up", credential)]
        args: list[str | int] = [*figures, int(keep_s * 1000)]
        await self._call("upstream", lambda: self._upstream(keys, args))

    async def get_upstream(self, credential: str) -> dict[str, float]:
        raw = await self._call("upstream", lambda: self.client.hgetall(self.key("up", credential)))
        out = {}
        for name, value in raw.items():
            try:
                out[_text(name)] = float(value)
            except ValueError:
                continue
        return out

    # --- sealed values and locks -------------------------------------------------

    async def get_sealed(self, name: str) -> bytes | None:
        key = self.key(name)
        blob = await self._call("token", lambda: self.client.get(key), self.token_timeout_s)
        return blob if blob is None else self.sealer.open(key, _bytes(blob))

    async def put_sealed(self, name: str, data: bytes, ttl_s: float) -> None:
        key = self.key(name)
        blob = self.sealer.seal(key, data)
        px = max(1, int(ttl_s * 1000))
        await self._call("token", lambda: self.client.set(key, blob, px=px), self.token_timeout_s)

    async def lock(self, name: str, ttl_s: float) -> str | None:
        """Take the lock `name` for at most `ttl_s`; its holder token, or None if held."""
        token = secrets.token_hex(16)
        key = self.key("lock", name)
        px = max(1, int(ttl_s * 1000))
        got = await self._call(
            "lock", lambda: self.client.set(key, token, nx=True, px=px), self.token_timeout_s
        )
        return token if got else None

    async def unlock(self, name: str, token: str) -> None:
        key = self.key("lock", name)
        await self._call("lock", lambda: self._unlock([key], [token]), self.token_timeout_s)

    async def locked(self, name: str) -> bool:
        key = self.key("lock", name)
        n: int = await self._call("lock", lambda: self.client.exists(key), self.token_timeout_s)
        return bool(n)

    # --- health ------------------------------------------------------------------

    async def probe(self) -> str:
        """PING, then write, read back and open a sealed value; raises StateUnavailable."""
        started = time.perf_counter()
        await self._call("probe", self.client.ping)
        probe = f"probe:{secrets.token_hex(8)}"
        payload = secrets.token_bytes(32)
        await self.put_sealed(probe, payload, 10)
        back = await self.get_sealed(probe)
        await self._call("probe", lambda: self.client.delete(self.key(probe)))
        if back != payload:
            raise StateUnavailable("a sealed value did not read back (another encryption key?)")
        ms = (time.perf_counter() - started) * 1000
        return f"PING and an encrypted round trip in {ms:.1f} ms"

    def status(self) -> dict[str, Any]:
        if self.available:
            return {"backend": "redis", "ok": True, "detail": "ok"}
        return {"backend": "redis", "ok": False, "detail": self.last_error or "unavailable"}

    async def close(self) -> None:
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
