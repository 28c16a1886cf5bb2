"""Hot reload under load: zero failed requests, atomic policy, bad configs refused."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal

import aiohttp
import pytest
import yaml

from gateway.reload import Reloader
from tests.harness import new_key
from tests.integration.ops_support import (
    PausingAuthentication,
    metric,
    metric_values,
    runtime,
    use_test_runtime,
)

REPOS = "/fabrikam/Fiber/_apis/git/repositories"


def policy(version: str, digest: str) -> dict:
    """Version a injects credential a (PAT pat-a), version b credential b: a request
    that mixed the two would find no token for its credential and fail."""
    return {
        "clients": [
            {
                "name": "ci",
                "credential": version,
                "scopes": ["vso.code"],
                "description": f"version {version}",
                "api_keys": [{"id": "k1", "sha256": digest}],
            }
        ]
    }


async def start(make_gateway, upstream, digest, **kw):
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": upstream.url}},
            "credentials": {
                "a": {"type": "pat", "pat": "pat-a"},
                "b": {"type": "pat", "pat": "pat-b"},
            },
        },
        {"ci.yaml": policy("a", digest)},
    )
    await use_test_runtime(gw.gateway)
    reloader = Reloader(gw.gateway, gw.config_path, build=runtime, **kw)
    return gw, reloader


def write_policy(gw, body) -> None:
    path = gw.config_path.parent / "policies" / "ci.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body if isinstance(body, str) else yaml.safe_dump(body))
    os.replace(tmp, path)


@pytest.mark.slow
async def test_reload_under_load_drops_nothing_and_never_mixes_policies(make_gateway, upstream):
    key, digest = new_key()
    gw, reloader = await start(make_gateway, upstream, digest)
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    results: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def client(s: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            async with s.get(gw.url + REPOS, headers=auth) as r:
                await r.read()
                results.append((r.status, r.headers["X-Request-ID"]))

    async with aiohttp.ClientSession() as s:
        load = [asyncio.ensure_future(client(s)) for _ in range(8)]
        for i in range(20):
            write_policy(gw, policy("b" if i % 2 == 0 else "a", digest))
            assert await reloader.reload(f"test {i}")
            await asyncio.sleep(0.01)  # let some requests run on each generation
        stop.set()
        await asyncio.gather(*load)
        async with s.get(gw.admin_url + "/metrics") as r:
            m = metric_values(await r.text())
        await reloader.close()

    assert len(results) > 100
    assert [st for st, _ in results if st != 200] == []
    pats = {r.headers["Authorization"] for r in upstream.seen}
    assert pats == {
        "Basic " + __import__("base64").b64encode(p).decode() for p in (b":pat-a", b":pat-b")
    }
    assert reloader.generation == 20
    assert metric(m, "azdo_gateway_config_reloads_total", result="success") == 20
    assert gw.gateway._users == {}  # every old runtime drained


async def test_bad_config_is_refused_and_old_one_keeps_serving(make_gateway, upstream, caplog):
    key, digest = new_key()
    gw, reloader = await start(make_gateway, upstream, digest)
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    before = gw.gateway.runtime
    bad = policy("a", digest)
    bad["clients"][0]["credential"] = "no-such-credential"
    bad["clients"][0]["scopse"] = ["vso.code"]
    write_policy(gw, bad)
    with caplog.at_level(logging.ERROR, logger="azdo_gateway.reload"):
        assert await reloader.reload("test") is False
    assert gw.gateway.runtime is before
    assert "refused, keeping the running one" in caplog.text
    assert "ci.yaml" in reloader.last_error and "scopse" in reloader.last_error
    write_policy(gw, "clients: [unclosed\n")
    assert await reloader.reload("test") is False
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + REPOS, headers=auth) as r:
            assert r.status == 200
        write_policy(gw, policy("b", digest))
        assert await reloader.reload("test") is True
        async with s.get(gw.url + REPOS, headers=auth) as r:
            assert r.status == 200
        async with s.get(gw.admin_url + "/metrics") as r:
            m = metric_values(await r.text())
    assert upstream.seen[-1].headers["Authorization"].endswith("OnBhdC1i")  # ":pat-b"
    assert metric(m, "azdo_gateway_config_reloads_total", result="failure") == 2
    assert metric(m, "azdo_gateway_config_reloads_total", result="success") == 1
    await reloader.close()


async def test_file_change_is_noticed_once_settled(make_gateway, upstream):
    key, digest = new_key()
    gw, reloader = await start(make_gateway, upstream, digest, interval_s=0.01)
    assert await reloader.poll() is None  # nothing changed
    write_policy(gw, policy("b", digest))
    assert await reloader.poll() is True
    assert gw.gateway.runtime.config.clients[0].credential == "b"
    assert await reloader.poll() is None
    # a new policy file matching the glob counts as a change
    extra = gw.config_path.parent / "policies" / "extra.yaml"
    extra.write_text(yaml.safe_dump({"clients": [{"name": "other", "credential": "a"}]}))
    assert await reloader.poll() is True
    assert [c.name for c in gw.gateway.runtime.config.clients] == ["ci", "other"]
    extra.unlink()
    assert await reloader.poll() is True
    assert [c.name for c in gw.gateway.runtime.config.clients] == ["ci"]
    await reloader.close()


async def test_sighup_reopens_audit_and_reloads(make_gateway, upstream):
    key, digest = new_key()
    gw, reloader = await start(make_gateway, upstream, digest)
    reloader.start()
    try:
        write_policy(gw, policy("b", digest))
        audit = gw.config_path.parent / "audit.jsonl"
        audit.write_text("")
        os.rename(audit, audit.with_suffix(".1"))
        done = asyncio.Event()
        orig = reloader.reload

        async def traced(why: str = "") -> bool:
            ok = await orig(why)
            done.set()
            return ok

        reloader.reload = traced  # type: ignore[method-assign]
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(done.wait(), 5)
        assert gw.gateway.runtime.config.clients[0].credential == "b"
        assert audit.exists()  # reopened under its name
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await reloader.close()


class GatedAuthentication(PausingAuthentication):
    """Key authentication that waits for the test to open the gate: a request
    held here has its route but has not reached the forwarder yet."""

    def __init__(self, config, arrived: asyncio.Event, gate: asyncio.Event) -> None:
        super().__init__(config)
        self.arrived, self.gate = arrived, gate

    async def authenticate(self, request, ctx):
        self.arrived.set()
        await self.gate.wait()
        return await super().authenticate(request, ctx)


async def test_reload_removing_a_host_lets_requests_in_flight_on_it_finish(make_gateway, upstream):
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": upstream.url, "vsrm": upstream.url}},
            "credentials": {"a": {"type": "pat", "pat": "pat-a"}},
        },
        {"ci.yaml": policy("a", digest)},
    )
    await use_test_runtime(gw.gateway)
    reloader = Reloader(gw.gateway, gw.config_path, build=runtime)
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    url = gw.url + "/_hosts/vsrm" + REPOS
    upstream.hold = asyncio.Event()
    arrived, gate = asyncio.Event(), asyncio.Event()
    async with aiohttp.ClientSession() as s:
        # one request waits for upstream's answer, on the old configuration
        upstream_held = asyncio.ensure_future(s.get(url, headers=auth))
        await upstream.wait_for(1)
        # another is still authenticating: it has not reached the forwarder yet
        old = gw.gateway.runtime
        gated = dataclasses.replace(old, authn=GatedAuthentication(old.config, arrived, gate))
        gw.gateway.swap(gated)
        auth_held = asyncio.ensure_future(s.get(url, headers=auth))
        await arrived.wait()
        doc = yaml.safe_load(gw.config_path.read_text())
        del doc["upstream"]["hosts"]["vsrm"]
        gw.config_path.write_text(yaml.safe_dump(doc))
        assert await reloader.reload("test") is True
        assert "vsrm" not in gw.gateway.runtime.config.gateway.upstream.hosts
        gate.set()
        arrival = asyncio.ensure_future(upstream.wait_for(2))
        await asyncio.wait({arrival, auth_held}, return_when=asyncio.FIRST_COMPLETED)
        if not arrival.done():  # answered without reaching upstream
            arrival.cancel()
            async with await auth_held as r:
                pytest.fail(f"answered {r.status} {await r.text()}")
        upstream.hold.set()
        for held in (upstream_held, auth_held):
            async with await held as r:
                assert r.status == 200, await r.text()
                assert await r.json() == {"count": 0, "value": []}
        # a new request on the removed host is refused before anything goes upstream
        async with s.get(url, headers=auth) as r:
            assert r.status == 400
            assert r.content_type == "application/json"
            body = await r.json()
            assert body["reason"] == "bad_request" and "vsrm" in body["error"]
    assert len(upstream.seen) == 2
    await reloader.close()
