"""Does one client fetching big JSON pages stall everyone else on the same worker?

    python bench/rewrite_stall.py [--duration S] [--rounds N] [--page-mb MB] [--json FILE]
                                  [--against REV]

Starts a local upstream (aiohttp) and the gateway (`azdo-gateway run --workers 1`,
every stage on), each in its own process. The upstream answers a small JSON
project list and a big page (4.6 MB by default): a repository list in which every
item carries its `url`, `remoteUrl`, `webUrl`, project `url` and `_links` as Azure
DevOps writes them, all on the upstream's own origin, so the gateway rewrites some
40,000 URLs in each page.

Each round measures, side by side on the same worker:

- **alone**: small-request throughput (64 connections) with nothing else running;
- **stalled**: the same while one more client fetches the big page in a loop,
  with the pages per second it got.

and, in this process, the rewriter on the big page by itself (MB/s of wall time
and of CPU time). With `--against REV` a second gateway runs the code of git
revision REV (a temporary worktree) against the same upstream, measured in the
same rounds, alternating, so that both see the same machine. Targets: stalled
>= 0.7x alone; the big page rewritten at >= 50 MB/s. Load comes from `wrk`
when installed (see proxy_bench.py), else from an aiohttp client. On a machine
busy with other work, run it at a higher priority (`nice -n -10`, as root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb  # noqa: E402 - the gateway, wrk and CPU helpers

BIG = "/fabrikam/_apis/git/repositories?api-version=7.1"


def big_page(origin: str, size: int) -> bytes:
    """A repository list of about `size` bytes, as Azure DevOps answers it."""
    rnd = random.Random(7)
    items: list[dict[str, Any]] = []
    total = 0
    while total < size:
        i = len(items)
        pid = str(uuid.UUID(int=rnd.getrandbits(128)))
        rid = str(uuid.UUID(int=rnd.getrandbits(128)))
        repo = f"{origin}/fabrikam/{pid}/_apis/git/repositories/{rid}"
        item = {
            "id": rid,
            "name": f"repo-{i}",
            "url": repo,
            "project": {
                "id": pid,
                "name": f"Project {i}",
                "description": f"Mirror of {origin}/fabrikam/old/_git/repo-{i}",
                "url": f"{origin}/fabrikam/_apis/projects/{pid}",
                "state": "wellFormed",
                "revision": 411 + i,
                "visibility": "private",
                "lastUpdateTime": "2026-01-01T00:00:00.000Z",
            },
            "defaultBranch": "refs/heads/main",
            "size": 123456 + i,
            "remoteUrl": origin.replace("://", "://fabrikam@")
            + f"/fabrikam/Project%20{i}/_git/r{i}",
            "sshUrl": f"git@ssh.dev.azure.com:v3/fabrikam/Project%20{i}/repo-{i}",
            "webUrl": f"{origin}/fabrikam/Project%20{i}/_git/repo-{i}",
            "_links": {
                "self": {"href": repo},
                "project": {"href": f"{origin}/fabrikam/_apis/projects/{pid}"},
                "web": {"href": f"{origin}/fabrikam/Project%20{i}/_git/repo-{i}"},
                "items": {"href": f"{repo}/items"},
                "refs": {"href": f"{repo}/refs"},
            },
            "isDisabled": False,
        }
        total += len(json.dumps(item, separators=(",", ":"))) + 1
        items.append(item)
    return json.dumps({"count": len(items), "value": items}, separators=(",", ":")).encode()


def serve_upstream(size: int) -> None:
    """Child process: the upstream; prints its port, runs forever."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        pages: dict[str, bytes] = {}

        async def small(request: web.Request) -> web.Response:
            return web.Response(body=pb.PROJECTS, content_type="application/json")

        async def big(request: web.Request) -> web.Response:
            origin = f"{request.scheme}://{request.host}"
            if origin not in pages:
                pages[origin] = big_page(origin, size)
            return web.Response(body=pages[origin], content_type="application/json")

        app = web.Application()
        app.router.add_get("/fabrikam/_apis/projects", small)
        app.router.add_get("/fabrikam/_apis/git/repositories", big)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def fetch_loop(url: str, auth: str, stop: asyncio.Event, got: dict[str, float]) -> None:
    """One client fetching the big page back to back until `stop` is set."""
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            async with s.get(url, headers={"Authorization": auth}) as r:
                body = await r.read()
                if r.status != 200 or b"/_apis/git/repositories/" not in body:
                    raise SystemExit(f"big page failed: {r.status} {body[:200]!r}")
            got["pages"] += 1
            got["bytes"] += len(body)


def rewrite_alone(page: bytes, rounds: int) -> dict[str, float]:
    """The rewriter by itself on the big page, in this process."""
    from gateway.config.model import Config, GatewayConfig
    from gateway.proxy.rewrite import Rewriter

    origin = json.loads(page)["value"][0]["url"].split("/fabrikam/")[0]
    cfg = GatewayConfig.model_validate(
        {
            "listen": {"public_url": "https://gw.example.com"},
            "upstream": {"hosts": {"main": origin}},
        }
    )
    rw = Rewriter(Config(path=Path("gateway.yaml"), gateway=cfg, clients=(), routes=()))
    walls, cpus = [], []
    for _ in range(max(3, rounds)):
        wall, cpu = time.perf_counter(), time.process_time()
        out = rw.rewrite_body(page)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    assert out is not page and b"https://gw.example.com/fabrikam/" in out
    urls = out.count(b"https://gw.example.com/") + out.count(b"@gw.example.com/")
    return {
        "bytes": len(page),
        "urls_rewritten": urls,
        "MB_s_wall": len(page) / min(walls) / 1e6,
        "MB_s_cpu": len(page) / min(cpus) / 1e6,
        "ms_cpu": min(cpus) * 1000,
    }


async def measure(
    load: Any, gateway: str, pid: int, auth: str, seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Small-request throughput alone, then while one client fetches the big page."""
    before = pb.cpu_seconds(pid)
    alone: dict[str, float] = await load(gateway + pb.SMALL, auth, 64, seconds)
    alone["gateway_cpu_s"] = pb.cpu_seconds(pid) - before
    stop, got = asyncio.Event(), {"pages": 0.0, "bytes": 0.0}
    fetcher = asyncio.ensure_future(fetch_loop(gateway + BIG, auth, stop, got))
    await asyncio.sleep(0.5)  # the loop is running
    got.update(pages=0.0, bytes=0.0)
    before = pb.cpu_seconds(pid)
    stalled: dict[str, float] = await load(gateway + pb.SMALL, auth, 64, seconds)
    stalled["gateway_cpu_s"] = pb.cpu_seconds(pid) - before
    stalled["big_pages_s"] = got["pages"] / seconds
    stalled["big_MB_s"] = got["bytes"] / seconds / 1e6
    stop.set()
    await fetcher
    return alone, stalled


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with pb.worktree(args.against) as code:
        return await _bench(args, code)


async def _bench(args: argparse.Namespace, code: Path | None) -> dict[str, Any]:
    load = pb.wrk if pb.ensure_wrk() else pb.py_load
    size = int(args.page_mb * 1e6)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-upstream", str(size), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    upstream = f"http://127.0.0.1:{int(await asyncio.wait_for(proc.stdout.readline(), 30))}"
    procs = [proc]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            gateways: dict[str, tuple[Any, str, str]] = {}
            for name, source in [("current", None)] + (
                [(f"at {args.against}", code)] if code is not None else []
            ):
                folder = Path(tmp) / str(len(gateways))
                folder.mkdir()
                gateways[name] = await pb.spawn_gateway(folder, upstream, source)
                procs.append(gateways[name][0])
            results: dict[str, Any] = {
                "load_generator": load.__name__,
                "cpus": os.cpu_count(),
                "loadavg_before": os.getloadavg()[0],
            }
            page = b""
            async with aiohttp.ClientSession() as s:
                async with s.get(upstream + BIG) as r:
                    page = await r.read()
                for _, gateway, auth in gateways.values():
                    await load(gateway + pb.SMALL, auth, 8, 1)  # warm up
                    async with s.get(gateway + BIG, headers={"Authorization": auth}) as r:
                        first = json.loads(await r.read())["value"][0]
                    assert not first["url"].startswith(upstream), "the page was not rewritten"
            runs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {
                name: [] for name in gateways
            }
            for _ in range(args.rounds):  # alternating, so that both see the same machine
                for name, (gw, gateway, auth) in gateways.items():
                    runs[name].append(await measure(load, gateway, gw.pid, auth, args.duration))
            results["gateways"] = {
                name: {
                    "alone": _median([a for a, _ in rs]),
                    "stalled": _median([s for _, s in rs]),
                    "ratio": statistics.median(s["rps"] / a["rps"] for a, s in rs),
                }
                for name, rs in runs.items()
            }
            results["rewrite"] = rewrite_alone(page, args.rounds)
            results["loadavg_after"] = os.getloadavg()[0]
            return results
        finally:
            await pb.stop(procs)


def report(r: dict[str, Any]) -> str:
    rw = r["rewrite"]
    lines = [
        f"load: {r['load_generator']}, {r['cpus']} CPUs, load average "
        f"{r['loadavg_before']:.2f} -> {r['loadavg_after']:.2f}"
    ]
    for name, g in r["gateways"].items():
        a, s = g["alone"], g["stalled"]
        lines += [
            f"gateway {name}:",
            f"  small requests alone  {a['rps']:8.0f} req/s  p50 {a['p50_ms']:6.2f} ms"
            f"  p99 {a['p99_ms']:7.2f} ms",
            f"  with big pages        {s['rps']:8.0f} req/s  p50 {s['p50_ms']:6.2f} ms"
            f"  p99 {s['p99_ms']:7.2f} ms   ({s['big_pages_s']:.1f} big pages/s,"
            f" {s['big_MB_s']:.0f} MB/s)",
            f"  ratio (target >= 0.70)  {g['ratio']:.2f}",
        ]
    lines.append(
        f"big page: {rw['bytes'] / 1e6:.1f} MB, {rw['urls_rewritten']} URLs; rewritten at "
        f"{rw['MB_s_wall']:.0f} MB/s wall, {rw['MB_s_cpu']:.0f} MB/s CPU "
        f"({rw['ms_cpu']:.0f} ms CPU) (target >= 50)"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5, help="seconds per measurement (5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported (3)")
    p.add_argument("--page-mb", type=float, default=4.6, help="size of the big page (4.6)")
    p.add_argument("--json", help="also write the raw figures to this file")
    p.add_argument("--against", help="also measure the gateway at this git revision")
    p.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    results = asyncio.run(bench(args))
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
