"""Gateway throughput with policy on (full catalog match + authorize) versus off.

    python bench/policy_throughput.py [--seconds 1] [--rounds 15] [--concurrency 32]

Runs a real gateway on loopback in front of a minimal upstream that answers `{}`,
and drives it with keep-alive clients over a mix of allowed request paths. "Off"
swaps the catalog and policy of the same runtime for ones that allow everything
without looking; everything else (authentication, token, forwarding, metrics) is
identical. Short rounds alternate off and on; each on round is compared with the
off round just before it (same machine load), and the median ratio is printed.
Target: policy on within 5% of policy off.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.app import Gateway, build_runtime  # noqa: E402
from gateway.catalog import Catalog  # noqa: E402
from gateway.loading import load_checked  # noqa: E402
from gateway.server import start_listeners  # noqa: E402
from gateway.types import Decision, Match, Operation  # noqa: E402

KEY = "azgw_bench_" + "k" * 32
PATHS = [
    "/fabrikam/Fiber/_apis/git/repositories?api-version=7.1",
    "/fabrikam/Fiber/_apis/git/repositories/r1/commits",
    "/fabrikam/Fiber/_apis/git/repositories/r1/items?path=/README.md",
    "/fabrikam/Fiber/_apis/git/repositories/r1/pullrequests/7/threads",
    "/fabrikam/Fiber/_apis/build/builds?$top=10",
    "/fabrikam/_apis/projects",
]
ANY_OP = Operation("bench.Any", "bench", "main", "GET", "/**", ())


class OpenCatalog(Catalog):
    def match(self, host: str, method: str, path: str, query: str = "") -> Match | None:
        return Match(ANY_OP, {}, None, None)


class OpenPolicy:
    def authorize(self, identity: Any, ctx: Any) -> Decision:
        return Decision(True, None)


async def upstream() -> tuple[web.AppRunner, str]:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def drive(url: str, seconds: float, concurrency: int) -> float:
    headers = {"Authorization": aiohttp.encode_basic_auth("", KEY)}
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal done
        n = i
        while time.perf_counter() < stop:
            async with session.get(url + PATHS[n % len(PATHS)], headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            done += 1
            n += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session, i) for i in range(concurrency)))
        return done / (time.perf_counter() - start)


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=1)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    up_runner, up_url = await upstream()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "clients.yaml").write_text(
            yaml.safe_dump(
                {
                    "clients": [
                        {
                            "name": "bench",
                            "credential": "pat",
                            "scopes": ["vso.code", "vso.build"],
                            "api_keys": [
                                {"id": "k", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}
                            ],
                        }
                    ]
                }
            )
        )
        (d / "gateway.yaml").write_text(
            yaml.safe_dump(
                {
                    "listen": {"host": "127.0.0.1", "port": 0},
                    "admin": {"host": "127.0.0.1", "port": 0},
                    "upstream": {"hosts": {"main": up_url}},
                    "credentials": {"pat": {"type": "pat", "pat": "bench-pat"}},
                    "policies": ["clients.yaml"],
                    "audit": {"file": None},
                }
            )
        )
        config = load_checked(d / "gateway.yaml")
        on = build_runtime(config)
        open_policy: Any = OpenPolicy()
        off = dataclasses.replace(on, catalog=OpenCatalog(()), policy=open_policy)
        gateway = Gateway(on)
        await gateway.start()
        listeners = await start_listeners(gateway, config)
        rates: dict[str, list[float]] = {"on": [], "off": []}
        try:
            await drive(listeners.proxy_url, 1, args.concurrency)  # warm up
            for _ in range(args.rounds):
                for name, runtime in (("off", off), ("on", on)):
                    gateway.swap(runtime)
                    rates[name].append(
                        await drive(listeners.proxy_url, args.seconds, args.concurrency)
                    )
        finally:
            await listeners.proxy.cleanup()
            await listeners.admin.cleanup()
            await gateway.close()
            await up_runner.cleanup()
    on_rate, off_rate = statistics.median(rates["on"]), statistics.median(rates["off"])
    # adjacent rounds see the same machine load: compare them pairwise
    paired = statistics.median(a / b for a, b in zip(rates["on"], rates["off"], strict=True))
    print(
        f"policy off: median {off_rate:6.0f} req/s over {args.rounds} rounds "
        f"(min {min(rates['off']):.0f}, max {max(rates['off']):.0f})"
    )
    print(
        f"policy on:  median {on_rate:6.0f} req/s over {args.rounds} rounds "
        f"(min {min(rates['on']):.0f}, max {max(rates['on']):.0f})"
    )
    print(f"policy on / off, median of adjacent rounds: {100 * (paired - 1):+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
