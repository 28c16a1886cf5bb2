"""TokenSlot and RefreshPolicy with a scripted identity provider and a controlled clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.errors import CredentialUnavailable
from gateway.tokens.base import IssuedToken, NoMetrics, TokenAcquisitionError
from gateway.tokens.cache import RefreshPolicy, TokenSlot

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Provider:
    """A fetch whose answers the test scripts; counts calls; can be held."""

    def __init__(self, clock: Clock, lifetime: float = 3600) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.fail: TokenAcquisitionError | Exception | None = None
        self.gate: asyncio.Event | None = None
        self.refresh_in: float | None = None

    async def __call__(self, user_assertion: str | None) -> IssuedToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        now = self.clock()
        return IssuedToken(f"tok{self.calls}", now + self.lifetime, now, self.refresh_in)


def slot_for(provider: Provider, clock: Clock, **policy: float) -> TokenSlot:
    settings = {"backoff_base_s": 1.0, "backoff_cap_s": 60.0, "wait_s": 5.0, **policy}
    return TokenSlot(
        "cred", provider, RefreshPolicy(**settings), NoMetrics(), proactive=False, clock=clock
    )


@pytest.mark.parametrize(
    ("lifetime", "ahead", "refresh_in", "expected"),
    [
        (3600, 300, None, 3300),  # refresh_ahead_s before expiry
        (60, 300, None, 30),  # short-lived: at half its life
        (3600, 300, 600, 600),  # the provider's refresh_in comes first
        (3600, 300, 3500, 3300),  # ... unless refresh-ahead is earlier
        (3600, 0, None, 3600),
    ],
)
def test_refresh_at(lifetime, ahead, refresh_in, expected):
    token = IssuedToken("t", NOW + lifetime, NOW, refresh_in)
    assert RefreshPolicy(refresh_ahead_s=ahead).refresh_at(token) == NOW + expected


@pytest.mark.parametrize(("lifetime", "skew"), [(3600, 30), (60, 6), (2, 0.2)])
def test_valid_until_keeps_a_skew(lifetime, skew):
    token = IssuedToken("t", NOW + lifetime, NOW)
    assert RefreshPolicy().valid_until(token) == pytest.approx(NOW + lifetime - skew)


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    policy = RefreshPolicy(backoff_base_s=1, backoff_cap_s=60)
    random.seed(7)
    for failures, ceiling in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)]:
        values = {policy.backoff(failures) for _ in range(50)}
        assert all(ceiling / 2 <= v <= ceiling for v in values)
        assert len(values) > 1  # jittered


async def test_single_flight_on_a_cold_slot():
    clock = Clock()
    provider = Provider(clock)
    provider.gate = asyncio.Event()
    slot = slot_for(provider, clock)
    waiters = asyncio.gather(*(slot.get() for _ in range(1000)))
    await asyncio.sleep(0)
    provider.gate.set()
    tokens = await waiters
    assert provider.calls == 1
    assert {t.header_value for t in tokens} == {"Bearer tok1"}


async def test_warm_peek_then_background_refresh_then_expiry():
    clock = Clock()
    provider = Provider(clock, lifetime=100)  # refresh ahead at 50, valid until 90
    slot = slot_for(provider, clock, wait_s=60)
    first = await slot.get()
    assert slot.peek(clock()) is first and provider.calls == 1
    clock.now += 50
    provider.gate = asyncio.Event()  # the refresh hangs
    assert slot.peek(clock()) is first  # served, refresh started in the background
    await asyncio.sleep(0)  # let the refresh task reach the provider
    assert provider.calls == 2
    assert slot.peek(clock()) is first and provider.calls == 2  # no second refresh
    clock.now += 40  # past valid_until: never served any more
    assert slot.peek(clock()) is None
    provider.gate.set()
    assert (await slot.get()).header_value == "Bearer tok2"


async def test_failure_without_a_token_fails_fast_with_retry_after():
    clock = Clock()
    provider = Provider(clock)
    provider.fail = TokenAcquisitionError("invalid_client", "AADSTS7000215: Invalid client secret")
    slot = slot_for(provider, clock, backoff_base_s=8)
    with pytest.raises(CredentialUnavailable) as first:
        await slot.get()
    assert provider.calls == 1
    with pytest.raises(CredentialUnavailable) as second:
        await slot.get()  # inside the backoff: no new attempt
    assert provider.calls == 1
    assert first.value.status == 503
    assert "identity provider error: invalid_client" in second.value.message
    assert 4 <= int(second.value.headers["Retry-After"]) <= 9
    clock.now = slot.next_attempt
    provider.fail = None
    assert (await slot.get()).header_value == "Bearer tok2"
    assert slot.failures == 0 and slot.last_error is None


async def test_retry_after_from_the_provider_is_honoured():
    clock = Clock()
    provider = Provider(clock)
    provider.fail = TokenAcquisitionError("temporarily_unavailable", "busy", retry_after=120)
    slot = slot_for(provider, clock)
    with pytest.raises(CredentialUnavailable):
        await slot.get()
    assert slot.next_attempt == NOW + 120


async def test_waiting_is_bounded_when_the_provider_stalls():
    clock = Clock()
    provider = Provider(clock)
    provider.gate = asyncio.Event()
    slot = slot_for(provider, clock, wait_s=0.05)
    with pytest.raises(CredentialUnavailable, match="not answered within 0.05s"):
        await slot.get()
    clock.now += 1  # still no answer: later requests fail at once instead of queueing
    started = asyncio.get_running_loop().time()
    with pytest.raises(CredentialUnavailable, match="not answered within 0.05s"):
        await slot.get()
    assert asyncio.get_running_loop().time() - started < 0.04
    provider.gate.set()
    await slot.first_token()
    assert (await slot.get()).header_value == "Bearer tok1"
    assert provider.calls == 1


async def test_a_crash_in_the_provider_is_reported_and_not_fatal():
    clock = Clock()
    provider = Provider(clock)
    provider.fail = KeyError("boom")
    slot = slot_for(provider, clock, backoff_base_s=0.001)
    with pytest.raises(CredentialUnavailable, match="internal_error"):
        await slot.get()
    provider.fail = None
    clock.now += 1
    assert (await slot.get()).header_value == "Bearer tok2"


async def test_invalidate_drops_once_per_interval_and_ignores_stale_tokens():
    clock = Clock()
    provider = Provider(clock)
    slot = slot_for(provider, clock, reinvalidate_s=30)
    first = await slot.get()
    assert slot.invalidate(first)
    second = await slot.get()
    assert not slot.invalidate(first)  # already replaced
    assert not slot.invalidate(second)  # rejected again right away: keep it
    clock.now += 31
    assert slot.invalidate(second)
    assert (await slot.get()).header_value == "Bearer tok3"


async def test_inherit_takes_over_a_valid_token_without_asking():
    clock = Clock()
    provider = Provider(clock)
    old = slot_for(provider, clock)
    token = await old.get()
    new = slot_for(provider, clock)
    new.inherit(old)
    new.start()
    assert new.peek(clock()) is token and provider.calls == 1
    await asyncio.wait_for(new.first_token(), 1)
