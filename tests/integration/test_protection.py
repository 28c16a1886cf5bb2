"""Rate limits, overload shedding and upstream throttling, through real requests."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.harness import new_key
from tests.integration.ops_support import metric, metric_values, use_test_runtime

REPOS = "/fabrikam/Fiber/_apis/git/repositories"


async def start(make_gateway, upstream, clients, **gateway_yaml):
    keys = {}
    policy = []
    for name, extra in clients.items():
        key, digest = new_key()
        keys[name] = {"Authorization": aiohttp.encode_basic_auth("", key)}
        policy.append(
            {
                "name": name,
                "credential": "sp",
                "scopes": ["vso.code"],
                "api_keys": [{"id": "k", "sha256": digest}],
                **extra,
            }
        )
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": upstream.url}},
            "credentials": {"sp": {"type": "pat", "pat": "p"}},
            **gateway_yaml,
        },
        {"p.yaml": {"clients": policy}},
    )
    await use_test_runtime(gw.gateway)
    return gw, keys


async def scrape(s, gw):
    async with s.get(gw.admin_url + "/metrics") as r:
        return metric_values(await r.text())


async def test_client_rate_limit_answers_429_with_retry_after_and_reason(make_gateway, upstream):
    gw, keys = await start(
        make_gateway, upstream, {"tight": {"rate_limit": {"per_minute": 6, "burst": 2}}, "free": {}}
    )
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(3):
            async with s.get(gw.url + REPOS, headers=keys["tight"]) as r:
                statuses.append(r.status)
                body = await r.json()
                last = r
        assert statuses == [200, 200, 429]
        assert int(last.headers["Retry-After"]) in range(9, 11)
        assert body["reason"] == "rate_limited" and "6 requests per minute" in body["error"]
        async with s.get(gw.url + REPOS, headers=keys["free"]) as r:
            assert r.status == 200  # another client is not affected
        m = await scrape(s, gw)
    assert len(upstream.seen) == 3
    assert metric(m, "azdo_gateway_denied_total", client="tight", reason="rate_limited") == 1
    # limits apply before the operation is matched: a limited request costs no matching
    assert (
        metric(
            m,
            "azdo_gateway_requests_total",
            client="tight",
            operation_area="-",
            method="GET",
            status="429",
        )
        == 1
    )


async def test_concurrency_cap_and_overload_shedding(make_gateway, upstream):
    gw, keys = await start(
        make_gateway,
        upstream,
        {"one-at-a-time": {"rate_limit": {"per_minute": 600, "max_concurrent": 1}}, "other": {}},
        limits={"max_inflight": 2},
    )
    upstream.hold = asyncio.Event()
    async with aiohttp.ClientSession() as s:
        first = asyncio.ensure_future(s.get(gw.url + REPOS, headers=keys["one-at-a-time"]))
        await upstream.wait_for(1)
        async with s.get(gw.url + REPOS, headers=keys["one-at-a-time"]) as r:
            assert r.status == 429
            assert (await r.json())["reason"] == "too_many_concurrent_requests"
        second = asyncio.ensure_future(s.get(gw.url + REPOS, headers=keys["other"]))
        await upstream.wait_for(2)
        async with s.get(gw.url + REPOS, headers=keys["other"]) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert (await r.json())["reason"] == "overloaded"
        upstream.hold.set()
        for fut in (first, second):
            async with await fut as r:
                assert r.status == 200
        async with s.get(gw.url + REPOS, headers=keys["one-at-a-time"]) as r:
            assert r.status == 200  # the slot was given back
        m = await scrape(s, gw)
    assert metric(m, "azdo_gateway_denied_total", client="-", reason="overloaded") == 1
    assert metric(m, "azdo_gateway_inflight_requests") == 0


async def test_upstream_throttling_is_passed_on_counted_and_slows_the_heaviest(
    make_gateway, upstream
):
    gw, keys = await start(make_gateway, upstream, {"noisy": {}, "quiet": {}})
    async with aiohttp.ClientSession() as s:
        for _ in range(5):
            async with s.get(gw.url + REPOS, headers=keys["noisy"]) as r:
                assert r.status == 200
        upstream.status = 429
        upstream.headers = {
            "Retry-After": "30",
            "X-RateLimit-Resource": "Core",
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1700000000",
        }
        async with s.get(gw.url + REPOS, headers=keys["quiet"]) as r:
            assert r.status == 429  # Azure DevOps' own answer, passed on
            assert r.headers["Retry-After"] == "30"
            assert r.headers["X-RateLimit-Remaining"] == "0"
        seen = len(upstream.seen)
        async with s.get(gw.url + REPOS, headers=keys["noisy"]) as r:
            assert r.status == 429
            body = await r.json()
            assert body["reason"] == "upstream_throttled" and body["source"] == "azdo-gateway"
            assert 29 <= int(r.headers["Retry-After"]) <= 30
        assert len(upstream.seen) == seen  # the heaviest client was held back at the gateway
        async with s.get(gw.url + REPOS, headers=keys["quiet"]) as r:
            assert r.status == 429 and "source" not in await r.json()  # light client goes on
        m = await scrape(s, gw)
    assert metric(m, "azdo_gateway_upstream_throttled_total", credential="sp", client="quiet") == 2
    assert metric(m, "azdo_gateway_upstream_throttled_total", credential="sp", client="noisy") == 0
    assert metric(m, "azdo_gateway_denied_total", client="noisy", reason="upstream_throttled") == 1
    assert metric(m, "azdo_gateway_upstream_ratelimit_remaining", credential="sp") == 0
    assert metric(m, "azdo_gateway_upstream_ratelimit_limit", credential="sp") == 200
    lines = (gw.config_path.parent / "audit.jsonl").read_text().splitlines()
    assert '"x-ratelimit-remaining":"0"' in lines[5]
