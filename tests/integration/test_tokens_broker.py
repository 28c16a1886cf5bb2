"""TokenBroker against the fake Entra ID with MSAL unmodified: caching, single flight,
refresh ahead, outages, recovery, invalidation and on-behalf-of isolation."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from gateway.errors import CredentialUnavailable, Unauthenticated
from gateway.tokens import RefreshPolicy, TokenBroker
from gateway.types import UpstreamToken
from tests.integration.tokens_support import (
    FAST,
    Clock,
    app_identity,
    broker_for,
    config_for,
    user_identity,
    write_cert,
)


def _claims(token: UpstreamToken) -> dict:
    return jwt.decode(
        token.header_value.removeprefix("Bearer "), options={"verify_signature": False}
    )


async def test_cold_cache_stampede_makes_one_request_per_credential(make_entra, tmp_path, started):
    entra = await make_entra()
    entra.register_app("sp-secret", secret="s3cret-value")
    cert_file, cert_pem = write_cert(entra, tmp_path, "sp-cert")
    entra.register_app("sp-cert", certificate_pem=cert_pem)
    config = config_for(
        entra,
        {
            "build-sp": {
                "type": "client_secret",
                "client_id": "sp-secret",
                "client_secret": "s3cret-value",
            },
            "cert-sp": {
                "type": "client_certificate",
                "client_id": "sp-cert",
                "certificate_file": str(cert_file),
            },
        },
    )
    broker, metrics = broker_for(config)
    gate = entra.stall()  # hold the first requests so that every caller arrives cold
    await started(broker)
    clients = {c.name: c for c in config.clients}
    calls = [
        broker.acquire(app_identity(name), clients[name])
        for name in ("build-sp", "cert-sp")
        for _ in range(500)
    ]
    pending = asyncio.gather(*calls)
    await asyncio.wait_for(entra.wait_stalled(2), 10)
    gate.set()
    tokens = await asyncio.wait_for(pending, 20)
    assert entra.requests["client_credentials"] == 2
    assert entra.requests_by[("client_credentials", "sp-secret")] == 1
    assert entra.requests_by[("client_credentials", "sp-cert")] == 1
    assert len({t.header_value for t in tokens[:500]}) == 1
    assert len({t.header_value for t in tokens[500:]}) == 1
    assert _claims(tokens[0])["appid"] == "sp-secret"
    assert _claims(tokens[500])["appid"] == "sp-cert"
    assert metrics.acquisitions[("build-sp", "ok")] == 1
    assert broker.ready() == (True, "ok")


async def test_warm_path_is_served_from_cache(make_entra, started):
    entra = await make_entra()
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    broker, metrics = broker_for(config)
    await started(broker)
    assert await broker.warm_up() == (True, "ok")
    client = config.clients[0]
    first = await broker.acquire(app_identity("sp"), client)
    for _ in range(100):
        assert await broker.acquire(app_identity("sp"), client) is first
    assert entra.requests["client_credentials"] == 1
    broker.flush_metrics()
    assert metrics.hits["sp"] >= 100
    assert metrics.expiry["sp"] == first.expires_at


async def test_refresh_in_from_the_provider_is_honoured(make_entra, started):
    entra = await make_entra(token_lifetime_s=3600, refresh_in_s=1)
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    broker, metrics = broker_for(config)
    await started(broker)
    first = await broker.acquire(app_identity("sp"), config.clients[0])
    # refreshed after refresh_in (1 s), not refresh_ahead_s (300 s) before expiry
    await asyncio.wait_for(metrics.wait("sp", "ok", 2), 10)
    second = await broker.acquire(app_identity("sp"), config.clients[0])
    assert second.header_value != first.header_value


@pytest.mark.slow
async def test_short_lifetimes_refresh_ahead_and_no_request_waits(make_entra, started):
    entra = await make_entra(token_lifetime_s=2)
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    broker, _ = broker_for(config)
    await started(broker)
    await broker.warm_up()
    slot = broker._slots["sp"]
    seen, waited = set(), 0
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:  # a steady load: one request every 10 ms
        if slot.peek(time.time()) is None:
            waited += 1
        seen.add((await broker.acquire(app_identity("sp"), config.clients[0])).header_value)
        await asyncio.sleep(0.01)
    assert waited == 0
    assert len(seen) >= 3  # refreshed at least twice, ahead of expiry
    assert entra.requests["client_credentials"] == len(seen)


async def test_outage_serves_valid_token_then_fails_fast_then_recovers(make_entra, started):
    entra = await make_entra(token_lifetime_s=3600)
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    clock = Clock()
    broker, metrics = broker_for(config, clock=clock)
    await started(broker)
    client = config.clients[0]
    first = await broker.acquire(app_identity("sp"), client)

    entra.fail(status=503)
    clock.advance(3600 - 300 + 1)  # inside the refresh window
    assert await broker.acquire(app_identity("sp"), client) is first  # starts a refresh
    await asyncio.wait_for(metrics.wait("sp", "server_error", 2), 10)  # retried with backoff
    assert await broker.acquire(app_identity("sp"), client) is first  # still valid: served

    clock.advance(300)  # now expired
    started_at = time.monotonic()
    with pytest.raises(CredentialUnavailable) as info:
        await broker.acquire(app_identity("sp"), client)
    assert time.monotonic() - started_at < 1.0
    assert info.value.status == 503 and int(info.value.headers["Retry-After"]) >= 1
    assert "identity provider error: server_error" in info.value.message
    assert broker._slots["sp"].token is None or clock() >= broker._slots["sp"].valid_until

    entra.heal()
    await asyncio.wait_for(metrics.wait("sp", "ok", 2), 10)  # the retry timer recovers
    recovered = await broker.acquire(app_identity("sp"), client)
    assert recovered.header_value != first.header_value


async def test_aadsts_errors_are_counted_by_reason_and_never_hold_the_secret(
    make_entra, started, caplog
):
    entra = await make_entra()
    entra.register_app("sp", secret="the-right-secret")
    config = config_for(
        entra,
        {
            "sp": {
                "type": "client_secret",
                "client_id": "sp",
                "client_secret": "a-wrong-secret-value",
            }
        },
    )
    broker, metrics = broker_for(config)
    caplog.set_level("DEBUG")
    await started(broker)
    with pytest.raises(CredentialUnavailable) as info:
        await broker.acquire(app_identity("sp"), config.clients[0])
    assert metrics.acquisitions[("sp", "invalid_client")] == 1
    assert "invalid_client" in info.value.message
    assert "AADSTS7000215" in caplog.text
    ok, why = broker.ready()
    assert not ok and "sp (invalid_client)" in why
    for text in (caplog.text, info.value.message, why):
        assert "a-wrong-secret-value" not in text and "the-right-secret" not in text


async def test_stalled_provider_cold_request_gets_503_within_wait(make_entra, started):
    entra = await make_entra()
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    broker, metrics = broker_for(
        config, policy=RefreshPolicy(backoff_base_s=0.05, backoff_cap_s=0.2, wait_s=0.3)
    )
    gate = entra.stall()
    await started(broker)
    with pytest.raises(CredentialUnavailable, match="has not answered within 0.3s"):
        await broker.acquire(app_identity("sp"), config.clients[0])
    gate.set()
    await asyncio.wait_for(metrics.wait("sp", "ok"), 10)
    assert await broker.acquire(app_identity("sp"), config.clients[0])
    assert entra.requests["client_credentials"] == 1


async def test_invalidate_drops_the_token_once(make_entra, started):
    entra = await make_entra()
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    broker, _ = broker_for(config)
    await started(broker)
    client = config.clients[0]
    first = await broker.acquire(app_identity("sp"), client)
    broker.invalidate(first)
    second = await broker.acquire(app_identity("sp"), client)
    assert second.header_value != first.header_value
    broker.invalidate(first)  # stale: already replaced
    broker.invalidate(second)  # a fresh replacement rejected again is kept (no storm)
    assert await broker.acquire(app_identity("sp"), client) is second
    assert entra.requests["client_credentials"] == 2


async def test_on_behalf_of_isolates_users_and_asks_only_granted_scopes(make_entra, started):
    entra = await make_entra()
    entra.register_app("gw", secret="gw-secret", identifier_uris=("api://azdo-gateway",))
    config = config_for(
        entra,
        {"caller": {"type": "on_behalf_of", "client_id": "gw", "client_secret": "gw-secret"}},
        scopes=("vso.code", "vso.build_execute"),
    )
    broker, _ = broker_for(config)
    await started(broker)
    client = config.clients[0]
    alice, bob = (user_identity(entra, "caller", oid) for oid in ("alice", "bob"))
    gate = entra.stall()
    calls = [broker.acquire(u, client) for _ in range(300) for u in (alice, bob)]
    pending = asyncio.gather(*calls)
    await asyncio.wait_for(entra.wait_stalled(2), 10)
    gate.set()
    tokens = await asyncio.wait_for(pending, 20)
    assert entra.requests_by[("on_behalf_of", "alice")] == 1
    assert entra.requests_by[("on_behalf_of", "bob")] == 1
    for i, token in enumerate(tokens):
        claims = _claims(token)
        assert claims["oid"] == ("alice", "bob")[i % 2]
        assert claims["scp"] == "vso.build_execute vso.code"
    # bob with a different token later still gets bob's cached token, never alice's
    bob_again = user_identity(entra, "caller", "bob")
    assert _claims(await broker.acquire(bob_again, client))["oid"] == "bob"
    assert entra.requests["on_behalf_of"] == 2


async def test_on_behalf_of_without_a_user_token_is_unauthenticated(make_entra, started):
    entra = await make_entra()
    config = config_for(
        entra, {"caller": {"type": "on_behalf_of", "client_id": "gw", "client_secret": "x"}}
    )
    broker, _ = broker_for(config)
    await started(broker)
    assert broker.ready() == (True, "ok")
    with pytest.raises(Unauthenticated, match="Entra ID access token"):
        await broker.acquire(app_identity("caller"), config.clients[0])
    assert entra.requests["on_behalf_of"] == 0


async def test_on_behalf_of_cache_is_bounded(make_entra, started):
    entra = await make_entra()
    entra.register_app("gw", secret="gw-secret", identifier_uris=("api://azdo-gateway",))
    config = config_for(
        entra, {"caller": {"type": "on_behalf_of", "client_id": "gw", "client_secret": "gw-secret"}}
    )
    broker = TokenBroker(config, policy=FAST, obo_users=3)
    await started(broker)
    for i in range(5):
        await broker.acquire(user_identity(entra, "caller", f"user{i}"), config.clients[0])
    assert len(broker._obo["caller"]) == 3


async def test_retry_after_from_entra_is_honoured(make_entra, started):
    entra = await make_entra()
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    broker, _ = broker_for(config)
    entra.fail(status=429, error="temporarily_unavailable", retry_after="120")
    await started(broker)
    with pytest.raises(CredentialUnavailable) as info:
        await broker.acquire(app_identity("sp"), config.clients[0])
    assert 119 <= int(info.value.headers["Retry-After"]) <= 121
    assert entra.requests["client_credentials"] == 1


async def test_reload_adopts_tokens_of_unchanged_credentials(make_entra, started):
    entra = await make_entra()
    entra.register_app("a", secret="s")
    entra.register_app("b", secret="s")
    creds = {
        "same": {"type": "client_secret", "client_id": "a", "client_secret": "s"},
        "changed": {"type": "client_secret", "client_id": "a", "client_secret": "s"},
    }
    old_config = config_for(entra, creds)
    old, metrics = broker_for(old_config)
    await started(old)
    assert await old.warm_up(10) == (True, "ok")
    before = {c.name: await old.acquire(app_identity(c.name), c) for c in old_config.clients}
    assert entra.requests["client_credentials"] == 2

    creds["changed"] = {"type": "client_secret", "client_id": "b", "client_secret": "s"}
    new_config = config_for(entra, creds)
    new = TokenBroker(new_config, policy=FAST)
    new.adopt(old)
    assert new.metrics is metrics
    await started(new)
    assert new.ready()[0] is False  # "changed" has no token yet
    same = await new.acquire(app_identity("same"), new_config.clients[0])
    assert same is before["same"]
    changed = await new.acquire(app_identity("changed"), new_config.clients[1])
    assert _claims(changed)["appid"] == "b"
    assert entra.requests["client_credentials"] == 3


async def test_reload_keeps_on_behalf_of_users(make_entra, started):
    entra = await make_entra()
    entra.register_app("gw", secret="gw-secret", identifier_uris=("api://azdo-gateway",))
    creds = {"caller": {"type": "on_behalf_of", "client_id": "gw", "client_secret": "gw-secret"}}
    config = config_for(entra, creds)
    old, _ = broker_for(config)
    await started(old)
    alice = user_identity(entra, "caller", "alice")
    token = await old.acquire(alice, config.clients[0])
    new, _ = broker_for(config_for(entra, creds))
    new.adopt(old)
    await started(new)
    assert await new.acquire(alice, new.config.clients[0]) is token
    assert entra.requests["on_behalf_of"] == 1
