"""The Redis state backend against a real redis-server: atomic limits, sealed values,
locks, and a Redis that is stopped, frozen or back again."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from gateway.config.model import State
from gateway.state import RedisStore, Sealer, StateUnavailable

KEY = base64.b64encode(bytes(range(32))).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_for(url: str, **kwargs: Any) -> RedisStore:
    clock = kwargs.pop("clock", time.monotonic)
    kwargs.setdefault("timeout_s", 1.0)  # the machine is shared: no timeouts by accident
    state = State(backend="redis", url=url, encryption_key=KEY, **kwargs)
    return RedisStore(state, clock=clock)


@pytest.fixture
async def redis(make_redis: Any) -> Any:
    return await make_redis()


@pytest.fixture
async def store(redis: Any) -> Any:
    s = store_for(redis.url)
    yield s
    await s.close()


async def test_the_bucket_is_one_for_every_store_sharing_the_url(redis: Any) -> None:
    a, b = store_for(redis.url), store_for(redis.url)
    try:
        verdicts = []
        for i in range(6):
            verdicts.append(
                await (a if i % 2 else b).admit(
                    "ci", per_minute=60, burst=4, max_concurrent=None, ticket=str(i), lease_s=60
                )
            )
        assert [code for code, _ in verdicts] == [0, 0, 0, 0, 2, 2]
        assert 0.5 < verdicts[-1][1] <= 1.0  # a token a second: the next one within a second
    finally:
        await a.close()
        await b.close()


async def test_max_concurrent_counts_tickets_until_released(store: RedisStore) -> None:
    def admit(ticket: str) -> Any:
        return store.admit(
            "ci", per_minute=6000, burst=100, max_concurrent=2, ticket=ticket, lease_s=60
        )

    assert (await admit("a"))[0] == 0
    assert (await admit("b"))[0] == 0
    assert (await admit("c"))[0] == 1
    await store.release("ci", "a")
    assert (await admit("d"))[0] == 0


async def test_a_lease_ends_on_its_own(store: RedisStore) -> None:
    """A replica that died holding a ticket does not hold the client's slot forever."""

    def admit(ticket: str, lease_s: float) -> Any:
        return store.admit("ci", per_minute=6000, burst=100, max_concurrent=1, ticket=ticket,
                           lease_s=lease_s)  # fmt: skip

    assert (await admit("a", 0.001))[0] == 0
    while (await admit("b", 60))[0] == 1:  # until Redis' clock is past a's 1 ms lease
        pass
    assert await store.client.zscore(store.key("cc", "ci"), "b") is not None
    assert await store.client.zscore(store.key("cc", "ci"), "a") is None


async def test_failed_authentications_count_per_source_in_a_window(store: RedisStore) -> None:
    for n in range(1, 4):
        count, left = await store.failed_authentication("203.0.113.7", 60)
        assert count == n and 50 < left <= 60
    assert (await store.failed_authentications("203.0.113.7"))[0] == 3
    assert await store.failed_authentications("198.51.100.9") == (0, 0)


async def test_source_addresses_are_not_in_key_names(store: RedisStore, redis: Any) -> None:
    await store.failed_authentication("203.0.113.7", 60)
    keys = [k for k, _ in await redis.dump()]
    assert keys and all(b"203.0.113.7" not in k for k in keys)
    assert all(k.startswith(b"azgw:") for k in keys)


async def test_sealed_values_are_encrypted_and_bound_to_their_key(
    store: RedisStore, redis: Any
) -> None:
    secret = b"eyJhbGciOiJSUzI1NiJ9.secret-token-value.sig"
    await store.put_sealed("token:build", secret, 60)
    assert await store.get_sealed("token:build") == secret
    dumped = b"".join(raw for _, raw in await redis.dump())
    assert secret not in dumped and base64.b64encode(secret) not in dumped
    r = store.client
    await r.set(store.key("token:other"), await r.get(store.key("token:build")))
    assert await store.get_sealed("token:other") is None  # copied elsewhere: does not open
    other = Sealer(bytes(32))
    assert other.open(store.key("token:build"), await r.get(store.key("token:build"))) is None


async def test_a_lock_has_one_holder_and_only_it_releases_it(store: RedisStore) -> None:
    token = await store.lock("token:build", 5)
    assert token is not None
    assert await store.lock("token:build", 5) is None
    await store.unlock("token:build", "not-the-holder")
    assert await store.locked("token:build")
    await store.unlock("token:build", token)
    assert not await store.locked("token:build")


async def test_probe_round_trips_an_encrypted_value(store: RedisStore) -> None:
    assert "encrypted round trip" in await store.probe()


async def test_a_stopped_redis_opens_the_breaker_and_a_restarted_one_closes_it(
    redis: Any,
) -> None:
    clock = Clock()
    store = store_for(redis.url, clock=clock)
    try:
        await store.failed_authentications("x")
        await redis.stop()
        with pytest.raises(StateUnavailable):
            await store.failed_authentications("x")
        assert not store.available
        assert store.status()["ok"] is False
        await redis.start()
        # open: refused at once, without asking the (running again) server
        with pytest.raises(StateUnavailable):
            await store.failed_authentications("x")
        clock.now += 0.25  # the first backoff
        assert await store.failed_authentications("x") == (0, 0)
        assert store.available and store.status()["ok"] is True
    finally:
        await store.close()


async def test_a_frozen_redis_costs_a_call_its_timeout_and_no_more(redis: Any) -> None:
    clock = Clock()
    store = store_for(redis.url, clock=clock, timeout_s=0.05)
    try:
        await store.failed_authentications("x")
        redis.freeze()
        started = time.monotonic()
        with pytest.raises(StateUnavailable, match="no answer within 0.05s"):
            await store.failed_authentications("x")
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        for _ in range(100):  # the breaker is open: nothing waits
            with pytest.raises(StateUnavailable):
                await store.admit(
                    "ci", per_minute=60, burst=1, max_concurrent=None, ticket="t", lease_s=1
                )
        assert time.monotonic() - started < 0.05
        redis.thaw()
        clock.now += 0.25
        assert await store.failed_authentications("x") == (0, 0)
    finally:
        await store.close()


async def test_admission_checks_the_sources_failures_in_the_same_call(store: RedisStore) -> None:
    def admit() -> Any:
        return store.admit("ci", per_minute=6000, burst=100, max_concurrent=None, ticket="",
                           lease_s=60, source="203.0.113.7", max_failures=3)  # fmt: skip

    assert (await admit())[0] == 0
    for _ in range(3):
        await store.failed_authentication("203.0.113.7", 60)
    code, left = await admit()
    assert code == 3 and 50 < left <= 60
