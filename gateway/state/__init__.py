"""Shared state: what workers and replicas must agree on (`state` in gateway.yaml).

With `backend: memory` (the default) nothing is shared: each process keeps
its limits, failure counts and tokens itself (gateway.limits,
gateway.authn.throttle, gateway.tokens.cache), as a single process needs.
With `backend: redis` every process that shares `state.url` acts as one
gateway: `open_store()` returns the `RedisStore` that the limiter, the
failed-authentication throttle and the token broker consult, each falling
back to its in-process state when the store is unavailable.
"""

from __future__ import annotations

from gateway.config.model import EncryptionKeyError, State
from gateway.state.crypto import Sealer, load_key
from gateway.state.store import RedisStore, StateMetrics, StateUnavailable

__all__ = [
    "probe_state",
    "EncryptionKeyError",
    "RedisStore",
    "Sealer",
    "StateMetrics",
    "StateUnavailable",
    "load_key",
    "open_store",
]


def open_store(state: State, metrics: StateMetrics | None = None) -> RedisStore | None:
    """The shared store `state` configures, or None for `backend: memory`.
    (No connection is made yet: the first call connects.)"""
    if state.backend != "redis":
        return None
    return RedisStore(state, metrics=metrics)


def probe_state(state: State, timeout_s: float = 5.0) -> tuple[bool, str]:
    """`check --probe`: PING the configured Redis and round-trip an encrypted value.
    Blocking; (ok, what happened), never a secret (the URL is not shown)."""
    import asyncio

    async def run() -> str:
        store = RedisStore(state.model_copy(update={"timeout_s": max(state.timeout_s, timeout_s)}))
        try:
            return await store.probe()
        finally:
            await store.close()

    try:
        return True, asyncio.run(run())
    except StateUnavailable as err:
        return False, err.detail
