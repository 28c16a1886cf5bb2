"""Two gateways on one real redis-server act as one: the rate limit, the
failed-authentication throttle and the upstream token are shared; Redis stopped,
frozen and back again costs no request (limits fail open) and no hang."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import pytest

from tests.harness import new_key

STATE_KEY = base64.b64encode(b"k" * 32).decode()
SECRET = "sp-secret-Zq8~value"


async def _fleet(
    make_gateway: Any,
    make_fake_azdo: Any,
    redis: Any,
    *,
    n: int = 2,
    rate_limit: dict[str, Any] | None = None,
    on_error: str = "open",
    credential: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    timeout_s: float = 0.5,  # the tests share the machine's CPUs: no fail-open by accident
) -> tuple[list[Any], Any, dict[str, str]]:
    fake = await make_fake_azdo()
    key, digest = new_key()
    client: dict[str, Any] = {"name": "ci", "credential": "upstream", "scopes": ["vso.project"],
                              "api_keys": [{"id": "k1", "sha256": digest}]}  # fmt: skip
    if rate_limit:
        client["rate_limit"] = rate_limit
    cfg: dict[str, Any] = {
        "upstream": {"hosts": {"main": fake.url}},
        "credentials": {"upstream": credential or {"type": "pat", "pat": "upstream-pat"}},
        "state": {"backend": "redis", "url": redis.url, "encryption_key": STATE_KEY,
                  "on_error": on_error, "timeout_s": timeout_s},
    }  # fmt: skip
    if identity:
        cfg["identity"] = identity
    gws = [await make_gateway(cfg, {"ci.yaml": {"clients": [client]}}) for _ in range(n)]
    return gws, fake, {"Authorization": aiohttp.encode_basic_auth("", key)}


async def _statuses(s: aiohttp.ClientSession, urls: list[str], headers: dict[str, str]) -> list:
    out = []
    for url in urls:
        async with s.get(url + "/fabrikam/_apis/projects", headers=headers) as r:
            out.append((r.status, (await r.json()).get("reason")))
    return out


async def test_a_burst_spread_over_two_gateways_gets_the_burst_once(
    make_gateway, make_fake_azdo, make_redis
):
    redis = await make_redis()
    gws, fake, auth = await _fleet(
        make_gateway, make_fake_azdo, redis, rate_limit={"per_minute": 60, "burst": 20}
    )
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        got = await _statuses(s, [gws[i % 2].url for i in range(40)], auth)
        elapsed = time.monotonic() - started
    passed = sum(1 for status, _ in got if status == 200)
    # 20 from the burst, plus the refill (one a second) during the run; never 40
    assert 20 <= passed <= 20 + int(elapsed) + 1, got
    assert {r for st, r in got if st != 200} == {"rate_limited"}
    assert len(fake.seen) == passed


async def test_failed_authentications_on_one_gateway_throttle_the_source_on_the_other(
    make_gateway, make_fake_azdo, make_redis
):
    redis = await make_redis()
    gws, fake, auth = await _fleet(make_gateway, make_fake_azdo, redis)
    bad = {"Authorization": aiohttp.encode_basic_auth("", "azgw_wrong_key")}
    async with aiohttp.ClientSession() as s:
        got = await _statuses(s, [gws[i % 2].url for i in range(20)], bad)
        assert got == [(401, "unknown_key")] * 20
        # the 21st attempt, and a good key from the same source, on either gateway
        assert (
            await _statuses(s, [gws[0].url, gws[1].url], bad)
            == [(429, "too_many_failed_authentications")] * 2
        )
        assert await _statuses(s, [gws[1].url], auth) == [(429, "too_many_failed_authentications")]


async def test_redis_stopped_frozen_and_back_costs_no_request(
    make_gateway, make_fake_azdo, make_redis
):
    redis = await make_redis()
    gws, fake, auth = await _fleet(
        make_gateway, make_fake_azdo, redis, rate_limit={"per_minute": 6000, "burst": 1000},
        timeout_s=0.05,
    )  # fmt: skip
    urls = [gws[i % 2].url for i in range(10)]
    async with aiohttp.ClientSession() as s:
        assert await _statuses(s, urls, auth) == [(200, None)] * 10
        await redis.stop()
        assert await _statuses(s, urls, auth) == [(200, None)] * 10
        async with s.get(gws[0].admin_url + "/readyz") as r:
            ready = await r.json()
        assert r.status == 200 and ready["state"]["ok"] is False
        async with s.get(gws[0].admin_url + "/healthz") as r:
            assert r.status == 200
        redis.frozen = False
        await redis.start()
        redis.freeze()  # connections are accepted, nothing is answered
        started = time.monotonic()
        assert await _statuses(s, urls, auth) == [(200, None)] * 10
        assert time.monotonic() - started < 5  # no request waits on the frozen Redis
        redis.thaw()
        # back: within the breaker's backoff (at most 2 s) the fleet uses it again
        async with asyncio.timeout(10):
            while not all(gw.gateway.state.available for gw in gws):
                await _statuses(s, urls[:2], auth)
                await asyncio.sleep(0.1)
        async with s.get(gws[1].admin_url + "/readyz") as r:
            assert (await r.json())["state"] == {"backend": "redis", "ok": True, "detail": "ok"}
        async with s.get(gws[1].admin_url + "/metrics") as r:
            text = await r.text()
        assert 'azdo_gateway_state_errors_total{operation="admit"}' in text
        assert "azdo_gateway_state_up 1.0" in text
    assert await redis.dump()  # the limits are kept in Redis again


async def test_on_error_closed_answers_503_state_unavailable(
    make_gateway, make_fake_azdo, make_redis
):
    redis = await make_redis()
    gws, fake, auth = await _fleet(
        make_gateway, make_fake_azdo, redis, n=1, on_error="closed",
        rate_limit={"per_minute": 600},
    )  # fmt: skip
    await redis.stop()
    async with aiohttp.ClientSession() as s:
        async with s.get(gws[0].url + "/fabrikam/_apis/projects", headers=auth) as r:
            body = await r.json()
            assert r.status == 503 and body["reason"] == "state_unavailable"
            assert r.headers["Retry-After"] == "1"
        async with s.get(gws[0].admin_url + "/readyz") as r:
            assert r.status == 503 and "state backend unavailable" in (await r.json())["detail"]
    assert len(fake.seen) == 0


@pytest.mark.parametrize("n", [2])
async def test_two_cold_gateways_make_one_token_request_and_store_it_sealed(
    make_gateway, make_fake_azdo, make_redis, make_entra, n
):
    redis = await make_redis()
    entra = await make_entra()
    entra.register_app("sp", secret=SECRET)
    gate = entra.stall()  # both gateways start (and prefetch) before the token is issued
    credential = {"type": "client_secret", "client_id": "sp", "client_secret": SECRET}
    starting = asyncio.ensure_future(
        _fleet(make_gateway, make_fake_azdo, redis, n=n, credential=credential,
               identity=entra.identity())
    )  # fmt: skip
    gws, fake, auth = await starting
    async with aiohttp.ClientSession() as s:
        requests = asyncio.gather(*(_statuses(s, [gws[i % n].url], auth) for i in range(20)))
        gate.set()
        got = await requests
    assert [g[0][0] for g in got] == [200] * 20
    assert entra.requests_by[("client_credentials", "sp")] == 1
    tokens = {r.headers["Authorization"] for r in fake.seen}
    assert len(tokens) == 1
    token = tokens.pop().removeprefix("Bearer ")
    needles = [token.encode(), base64.b64encode(token.encode()), SECRET.encode()]
    needles += [part.encode() for part in token.split(".") if len(part) > 8]
    for key, raw in await redis.dump():
        for needle in needles:
            assert needle not in key and needle not in raw, key


async def test_on_behalf_of_tokens_are_shared_per_user_and_name_no_user(
    make_gateway, make_fake_azdo, make_redis, make_entra
):
    """Each user's exchange happens once for the fleet; a user's token never serves
    another; Redis holds neither the users' ids nor their assertions."""
    aud, devs = "api://azdo-gateway", "6f0c6d8e-devs"
    redis = await make_redis()
    entra = await make_entra()
    entra.register_app("gw", secret="gw-secret", identifier_uris=(aud,))
    fake = await make_fake_azdo()
    cfg = {
        "upstream": {"hosts": {"main": fake.url}},
        "identity": entra.identity(aud),
        "credentials": {"caller": {"type": "on_behalf_of", "client_id": "gw",
                                   "client_secret": "gw-secret"}},
        "state": {"backend": "redis", "url": redis.url, "encryption_key": STATE_KEY,
                  "timeout_s": 0.5},
    }  # fmt: skip
    policy = {
        "devs.yaml": {
            "clients": [
                {
                    "name": "developers",
                    "credential": "caller",
                    "scopes": ["vso.code"],
                    "entra": {"groups": [devs]},
                }
            ]
        }
    }
    gws = [await make_gateway(cfg, policy) for _ in range(2)]
    users = ("alice-0b8e", "bob-77d1")
    assertions = {u: entra.mint_access_token({"oid": u, "groups": [devs]}) for u in users}
    async with aiohttp.ClientSession() as s:
        for round_ in range(2):
            for i, user in enumerate(users):
                gw = gws[(i + round_) % 2]  # each user on both gateways
                headers = {"Authorization": f"Bearer {assertions[user]}"}
                async with s.get(gw.url + "/fabrikam/_apis/projects", headers=headers) as r:
                    assert r.status == 200, await r.text()
                sent = fake.seen[-1].headers["Authorization"].removeprefix("Bearer ")
                claims = json.loads(base64.urlsafe_b64decode(sent.split(".")[1] + "=="))
                assert claims["oid"] == user
    for user in users:
        assert entra.requests_by[("on_behalf_of", user)] == 1
    upstream_tokens = {r.headers["Authorization"].removeprefix("Bearer ") for r in fake.seen}
    needles = [*users, *assertions.values(), *upstream_tokens]
    for key, raw in await redis.dump():
        for needle in needles:
            assert needle.encode() not in key and needle.encode() not in raw, key


async def test_with_redis_down_each_process_applies_its_own_limit(
    make_gateway, make_fake_azdo, make_redis
):
    """on_error: open is the memory backend's limits, not none: a client hammering a
    gateway through an outage still gets 429 beyond its burst there."""
    redis = await make_redis()
    gws, fake, auth = await _fleet(
        make_gateway, make_fake_azdo, redis, n=1, rate_limit={"per_minute": 60, "burst": 3}
    )
    await redis.stop()
    async with aiohttp.ClientSession() as s:
        got = await _statuses(s, [gws[0].url] * 5, auth)
    assert got[:3] == [(200, None)] * 3
    assert got[3:] == [(429, "rate_limited")] * 2
