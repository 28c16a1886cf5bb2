"""A fleet of real `azdo-gateway run` processes (and their workers) on one real
redis-server: one token request for the cold fleet, the client's burst once for
the fleet, the failed-authentication throttle on every process, nothing readable
in Redis; Redis stopped, frozen and restarted under load costs no request."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fleet import GatewayProcess
from tests.harness import new_key, write_config

pytestmark = pytest.mark.slow
STATE_KEY = base64.b64encode(b"f" * 32).decode()
SECRET = "sp-secret-Fl33t~value"


def _config(
    tmp_path: Path,
    redis: Any,
    upstream: str,
    credential: dict[str, Any],
    clients: list[dict[str, Any]],
    identity: dict[str, Any] | None = None,
) -> Path:
    gateway_yaml: dict[str, Any] = {
        "upstream": {"hosts": {"main": upstream}},
        "credentials": {"upstream": credential},
        "state": {"backend": "redis", "url": redis.url, "encryption_key": STATE_KEY,
                  "timeout_s": 0.5},
        "limits": {"shutdown_grace_s": 2},
    }  # fmt: skip
    if identity:
        gateway_yaml["identity"] = identity
    return write_config(tmp_path, gateway_yaml, {"ci.yaml": {"clients": clients}})


def _client(name: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "credential": "upstream", "scopes": ["vso.project"],
            "api_keys": [{"id": "k1", "sha256": digest}], **extra}  # fmt: skip


async def _get(url: str, key: str) -> tuple[int, str | None]:
    """One request on a new connection (so the kernel picks a worker each time)."""
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(url + "/fabrikam/_apis/projects", headers=auth) as r,
    ):
        body = await r.json()
        return r.status, body.get("reason") if isinstance(body, dict) else None


async def test_a_cold_fleet_makes_one_token_request_and_shares_limits_and_throttle(
    tmp_path, make_redis, make_entra, make_fake_azdo
):
    redis = await make_redis()
    entra = await make_entra()
    entra.register_app("sp", secret=SECRET)
    fake = await make_fake_azdo()
    key, digest = new_key()
    limited_key, limited_digest = new_key()
    cfg = _config(
        tmp_path, redis, fake.url,
        {"type": "client_secret", "client_id": "sp", "client_secret": SECRET},
        [_client("ci", digest),
         _client("limited", limited_digest, rate_limit={"per_minute": 60, "burst": 20})],
        identity=entra.identity(),
    )  # fmt: skip
    gate = entra.stall()  # the fleet starts (and prefetches) before any token is issued
    fleet = await asyncio.gather(*(GatewayProcess.start(cfg, workers=2) for _ in range(2)))
    try:
        await entra.wait_stalled(1)
        requests = asyncio.gather(*(_get(fleet[i % 2].url, key) for i in range(20)))
        await asyncio.sleep(0)  # let them start; the token is still being asked for
        gate.set()
        assert await requests == [(200, None)] * 20
        assert entra.requests_by[("client_credentials", "sp")] == 1

        # no token, secret or signature in Redis, in any encoding
        tokens = {r.headers["Authorization"].removeprefix("Bearer ") for r in fake.seen}
        assert len(tokens) == 1
        token = tokens.pop()
        needles = {token, SECRET, base64.b64encode(token.encode()).decode()}
        needles |= {part for part in token.split(".") if len(part) >= 8}
        dumped = await redis.dump()
        assert any(b"tok:upstream:" in k for k, _ in dumped)
        for name, raw in dumped:
            for needle in needles:
                assert needle.encode() not in name and needle.encode() not in raw, name

        # the limited client's burst is the fleet's: about 20 of 40, not 40 (or 80)
        started = time.monotonic()
        got = [await _get(fleet[i % 2].url, limited_key) for i in range(40)]
        passed = sum(1 for status, _ in got if status == 200)
        assert 20 <= passed <= 20 + int(time.monotonic() - started) + 1, got
        assert {reason for status, reason in got if status != 200} == {"rate_limited"}

        # 20 failed authentications anywhere in the fleet: this source is slowed everywhere
        bad = [await _get(fleet[i % 2].url, "azgw_not_a_key") for i in range(20)]
        assert bad == [(401, "unknown_key")] * 20
        for proc in fleet:
            for k in ("azgw_not_a_key", key):
                assert await _get(proc.url, k) == (429, "too_many_failed_authentications")
    finally:
        gate.set()
        codes = await asyncio.gather(*(proc.stop() for proc in fleet))
    assert codes == [0, 0], "\n".join(fleet[0].lines + fleet[1].lines)


async def test_redis_stopped_frozen_and_restarted_under_load_fails_no_request(
    tmp_path, make_redis, make_fake_azdo
):
    redis = await make_redis()
    fake = await make_fake_azdo()
    key, digest = new_key()
    cfg = _config(
        tmp_path, redis, fake.url, {"type": "pat", "pat": "upstream-pat"},
        [_client("ci", digest, rate_limit={"per_minute": 60000, "burst": 10000,
                                           "max_concurrent": 100})],
    )  # fmt: skip
    # the default timeout: a frozen Redis must cost requests at most 50 ms
    text = cfg.read_text().replace("timeout_s: 0.5", "timeout_s: 0.05")
    cfg.write_text(text)
    fleet = await asyncio.gather(*(GatewayProcess.start(cfg) for _ in range(2)))
    results: list[tuple[int, str | None, float]] = []
    stop = asyncio.Event()

    async def load(i: int) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            status, reason = await _get(fleet[i % 2].url, key)
            results.append((status, reason, time.monotonic() - t0))

    async def served(n: int) -> None:
        goal = len(results) + n
        async with asyncio.timeout(30):
            while len(results) < goal:
                await asyncio.sleep(0.01)

    async def states() -> list[bool]:
        out = []
        async with aiohttp.ClientSession() as s:
            for proc in fleet:
                async with s.get(proc.admin + "/readyz") as r:
                    assert r.status == 200
                    out.append((await r.json())["state"]["ok"])
                async with s.get(proc.admin + "/healthz") as r:
                    assert r.status == 200
        return out

    loaders = [asyncio.ensure_future(load(i)) for i in range(4)]
    try:
        await served(20)
        await redis.stop()
        await served(40)
        assert await states() == [False, False]
        await redis.start()
        redis.freeze()
        await served(40)
        redis.thaw()
        async with asyncio.timeout(15):  # back within seconds, without a restart
            while await states() != [True, True]:
                await served(4)
        await served(20)
    finally:
        stop.set()
        await asyncio.gather(*loaders, return_exceptions=True)
        redis.thaw() if redis.frozen else None
        codes = await asyncio.gather(*(proc.stop() for proc in fleet))
    assert {(status, reason) for status, reason, _ in results} == {(200, None)}
    slowest = max(seconds for _, _, seconds in results)
    assert slowest < 3, slowest  # no request waited on the stopped or frozen Redis
    assert codes == [0, 0]
    logs = "\n".join(fleet[0].lines + fleet[1].lines)
    assert "state backend unavailable" in logs and "available again" in logs
    assert "Traceback" not in logs
