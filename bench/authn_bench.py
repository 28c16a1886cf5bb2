"""Cost of client authentication per request.

    python bench/authn_bench.py [N]

Measures, on this machine, the time `Authentication.authenticate` adds to a request:
- a gateway key sent as HTTP Basic and as Bearer (hash, dict lookup, compare_digest),
- an Entra ID token already validated once (served from the cache by its SHA-256),
- a first-seen Entra ID token (RS256 signature and claims checked with PyJWT).
Targets: key and cached token under 10 µs, first-seen token under 1 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.authn import Authentication  # noqa: E402
from gateway.authn.api_key import key_sha256, new_key  # noqa: E402
from gateway.config.model import Config, GatewayConfig, PolicyFile  # noqa: E402
from gateway.demo.entra import EntraStandIn  # noqa: E402
from gateway.types import RequestContext  # noqa: E402

APP = str(uuid.uuid4())


async def per_call_us(fn: Callable[[], Awaitable[Any]], n: int, rounds: int = 5) -> float:
    """Median over `rounds` of the mean time per call, in microseconds."""
    for _ in range(min(n, 1000)):
        await fn()
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        results.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(results)


def config(entra: EntraStandIn, key: str) -> Config:
    clients: list[dict[str, Any]] = [
        {
            "name": f"client{i}",
            "credential": "c",
            "api_keys": [{"id": f"k{i}", "sha256": key_sha256(new_key())}],
        }
        for i in range(999)
    ]
    clients.append(
        {
            "name": "ci",
            "credential": "c",
            "api_keys": [{"id": "ci-1", "sha256": key_sha256(key)}],
            "entra": {"app_ids": [APP]},
        }
    )
    return Config(
        path=Path("gateway.yaml"),
        gateway=GatewayConfig.model_validate(
            {
                "identity": {
                    "authority_host": entra.url,
                    "tenant_id": entra.tenant_id,
                    "audiences": ["api://azdo-gateway"],
                    "ca_file": str(entra.ca_file),
                }
            }
        ),
        clients=PolicyFile.model_validate({"clients": clients}).clients,
        routes=(),
    )


async def main(n: int) -> None:
    """Real requests reach a loopback server; its handler times authentication of each."""
    entra = await EntraStandIn().start()
    key = new_key()
    authn = Authentication(config(entra, key))
    ctx = RequestContext(request_id="bench", method="GET")
    groups = [str(uuid.uuid4()) for _ in range(40)]
    token = entra.mint_access_token({"azp": APP, "groups": groups})
    results: dict[str, float] = {}

    async def handler(request: web.Request) -> web.Response:
        name = request.headers["X-Bench"]
        if name == "Entra token, first seen":  # every request brings a new token
            t0 = time.perf_counter()
            await authn.authenticate(request, ctx)
            results[name] = results.get(name, 0.0) + (time.perf_counter() - t0) * 1e6
        else:
            results[name] = await per_call_us(lambda: authn.authenticate(request, ctx), n)
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/fabrikam/_apis/git/repositories"
    cases = [
        ("gateway key, Basic", aiohttp.encode_basic_auth("git", key)),
        ("gateway key, Bearer", f"Bearer {key}"),
        ("Entra token, cached", f"Bearer {token}"),
    ]
    fresh = 300
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url, headers={"X-Bench": "warm", "Authorization": f"Bearer {token}"}):
                pass  # loads discovery + JWKS and caches `token`
            for name, authorization in cases:
                async with s.get(url, headers={"X-Bench": name, "Authorization": authorization}):
                    pass
            for _ in range(fresh):
                fresh_token = entra.mint_access_token({"azp": APP, "groups": groups})
                headers = {
                    "X-Bench": "Entra token, first seen",
                    "Authorization": f"Bearer {fresh_token}",
                }
                async with s.get(url, headers=headers):
                    pass
        results["Entra token, first seen"] /= fresh
    finally:
        await runner.cleanup()
        await authn.close()
        await entra.close()
    results.pop("warm", None)
    print(
        f"authentication cost per request (median of 5 x {n} calls; 1000 clients;"
        f" Entra token of {len(token)} bytes; first-seen: mean of {fresh})"
    )
    for name, us in results.items():
        target = 1000 if "first seen" in name else 10
        print(f"  {name:28s} {us:8.2f} µs   (target < {target} µs)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
