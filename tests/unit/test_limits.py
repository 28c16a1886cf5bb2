from __future__ import annotations

import pytest

from gateway.config.model import Client, RateLimit
from gateway.errors import Overloaded, TooManyRequests
from gateway.limits import HALF_LIFE_S, MAX_DELAY_S, Limiter, default_burst


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(name: str = "ci", **rate: int) -> Client:
    return Client(name=name, credential="sp", rate_limit=RateLimit(**rate) if rate else None)


def test_bucket_allows_burst_then_refills_at_the_rate():
    clock = Clock()
    lim = Limiter(clock=clock)
    c = client(per_minute=60, burst=3)
    for _ in range(3):
        lim.admit(c)
    with pytest.raises(TooManyRequests) as err:
        lim.admit(c)
    assert err.value.reason == "rate_limited"
    assert err.value.headers["Retry-After"] == "1"
    assert "60 requests per minute (burst 3)" in err.value.message
    clock.now += 0.5
    with pytest.raises(TooManyRequests):
        lim.admit(c)
    clock.now += 0.5
    lim.admit(c)  # one second at 1/s refilled one token
    clock.now += 3600
    for _ in range(3):  # refills to burst, not beyond
        lim.admit(c)
    with pytest.raises(TooManyRequests):
        lim.admit(c)


def test_retry_after_is_time_to_next_token_rounded_up():
    clock = Clock()
    lim = Limiter(clock=clock)
    c = client(per_minute=6, burst=1)  # one every 10 s
    lim.admit(c)
    clock.now += 2.2
    with pytest.raises(TooManyRequests) as err:
        lim.admit(c)
    assert err.value.headers["Retry-After"] == "8"


def test_clients_have_separate_buckets_and_no_rule_means_no_limit():
    lim = Limiter(clock=Clock())
    a, b = client("a", per_minute=60, burst=1), client("b", per_minute=60, burst=1)
    lim.admit(a)
    lim.admit(b)
    with pytest.raises(TooManyRequests):
        lim.admit(a)
    free = client("free")
    for _ in range(10_000):
        lim.admit(free)


def test_default_burst_is_ten_seconds_worth():
    assert default_burst(RateLimit(per_minute=600)) == 100
    assert default_burst(RateLimit(per_minute=1)) == 1
    assert default_burst(RateLimit(per_minute=600, burst=7)) == 7


def test_max_concurrent_is_released_and_does_not_spend_tokens():
    lim = Limiter(clock=Clock())
    c = client(per_minute=600, burst=100, max_concurrent=2)
    lim.admit(c)
    lim.admit(c)
    with pytest.raises(TooManyRequests) as err:
        lim.admit(c)
    assert err.value.reason == "too_many_concurrent_requests"
    lim.release(c)
    lim.admit(c)
    lim.release(c)
    lim.release(c)
    assert lim._concurrent == {}
    assert lim._buckets["ci"].tokens == 97


def test_overload_sheds_beyond_max_inflight():
    lim = Limiter(clock=Clock())
    lim.enter(2)
    lim.enter(2)
    with pytest.raises(Overloaded) as err:
        lim.enter(2)
    assert (err.value.status, err.value.reason, err.value.headers["Retry-After"]) == (
        503,
        "overloaded",
        "1",
    )
    lim.leave()
    lim.enter(2)
    assert lim.inflight == 2


def headers(limit: int, remaining: int, **extra: str) -> dict[str, str]:
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining), **extra}


def test_pressure_from_upstream_headers():
    clock = Clock()
    lim = Limiter(clock=clock)
    assert lim.pressure("sp") == 0
    lim.observe("sp", "ci", 200, headers(200, 150))
    assert lim.pressure("sp") == 0
    lim.observe("sp", "ci", 200, headers(200, 25))  # 12.5% left: halfway into the zone
    assert lim.pressure("sp") == pytest.approx(0.5)
    lim.observe("sp", "ci", 200, headers(200, 0))
    assert lim.pressure("sp") == 1
    clock.now += 301  # stale figures are forgotten
    assert lim.pressure("sp") == 0
    lim.observe("sp", "ci", 200, {"x-ratelimit-delay": "0.4"})
    assert lim.pressure("sp") == 0.5
    lim.observe("sp", "ci", 200, {"x-ratelimit-limit": "junk", "x-ratelimit-remaining": "-1"})
    assert lim.pressure("sp") == 0.5


def test_upstream_429_blocks_credential_for_retry_after():
    clock = Clock()
    lim = Limiter(clock=clock)
    assert lim.observe("sp", "ci", 429, {"retry-after": "30"}) is True
    assert lim.observe("sp", "ci", 200, {}) is False
    assert lim.pressure("sp") == 1 and lim.retry_after("sp") == 30
    assert lim.pressure("other-sp") == 0
    clock.now += 31
    assert lim.pressure("sp") == 0


def test_heaviest_clients_are_slowed_first():
    clock = Clock()
    lim = Limiter(clock=clock)
    for _ in range(80):
        lim.observe("sp", "noisy", 200, {})
    for _ in range(15):
        lim.observe("sp", "steady", 200, {})
    for _ in range(5):
        lim.observe("sp", "quiet", 200, {})
    assert lim.delay_for("sp", "noisy") == 0  # no pressure, no delay
    lim.observe("sp", "quiet", 200, headers(200, 0))
    assert lim.delay_for("sp", "noisy") == pytest.approx(MAX_DELAY_S)
    assert lim.delay_for("sp", "steady") == 0
    assert lim.delay_for("sp", "quiet") == 0
    assert lim.delay_for("sp", "newcomer") == 0


def test_usage_decays_so_yesterdays_heavy_client_is_not_punished_forever():
    clock = Clock()
    lim = Limiter(clock=clock)
    for _ in range(100):
        lim.observe("sp", "batch", 200, {})
    clock.now += 3600
    for _ in range(10):
        lim.observe("sp", "ui", 200, headers(200, 0))
    assert "batch" not in lim._credentials["sp"].usage
    assert lim.delay_for("sp", "ui") > 0  # the one remaining user takes the strain alone


def test_usage_is_each_clients_requests_halved_every_half_life():
    clock = Clock()
    lim = Limiter(clock=clock)
    ages: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for step in range(40):  # 40 minutes: past several rebasings of the weights
        for name in ("a", "b") if step % 3 else ("a", "b", "c"):
            lim.observe("sp", name, 200, {})
            ages[name].append(clock.now)
        clock.now += 60
    clock.now -= 60
    cred = lim._credentials["sp"]
    lim._rescale(cred)
    for name, times in ages.items():
        expected = sum(0.5 ** ((clock.now - t) / HALF_LIFE_S) for t in times)
        assert cred.usage[name] == pytest.approx(expected)
    clock.now += 10 * HALF_LIFE_S
    lim.observe("sp", "a", 200, {})
    assert set(cred.usage) == {"a"}  # the others fell below FORGOTTEN and are forgotten


async def test_pace_refuses_the_heaviest_while_upstream_blocks_and_passes_the_light():
    clock = Clock()
    lim = Limiter(clock=clock)
    for _ in range(9):
        lim.observe("sp", "noisy", 200, {})
    lim.observe("sp", "quiet", 429, {"retry-after": "12"})
    with pytest.raises(TooManyRequests) as err:
        await lim.pace("sp", "noisy")
    assert err.value.reason == "upstream_throttled"
    assert err.value.headers["Retry-After"] == "12"
    assert await lim.pace("sp", "quiet") == 0


async def test_pace_sleeps_when_the_credential_is_strained(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    monkeypatch.setattr("gateway.limits.asyncio.sleep", fake_sleep)
    lim = Limiter(clock=Clock())
    lim.observe("sp", "ci", 200, headers(100, 10))
    waited = await lim.pace("sp", "ci")
    assert waited == slept[0] == pytest.approx(0.6 * MAX_DELAY_S)
