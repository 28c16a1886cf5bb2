"""The gateway against a bare aiohttp pass-through forwarder, on loopback, in one run.

    python bench/proxy_bench.py [--duration S] [--rounds N] [--big-mib N]
                                [--concurrent N] [--json FILE]

Starts, each in its own process: a local upstream (aiohttp), the gateway
(`azdo-gateway run --workers 1`: real authentication, catalog, policy, PAT
injection, rewriting, metrics and audit) and a minimal forwarder on the same
aiohttp server and client (the low-level web.Server, the gateway's own
ClientSession with its connection limits; bodies streamed with iter_any,
nothing else). Then, alternating
between the two proxies so both see the same machine state:

- latency: one connection, back-to-back small JSON requests: p50, p99
- throughput: 64 connections of small JSON requests: requests/s, p50, p99, and
  the CPU time the proxy process spends per request (steadier than requests/s
  on a machine that is busy with other work); then the same list as Azure
  DevOps really sends it, with a URL in every item, which the gateway rewrites
  to its own (the forwarder passes it as it is)
- a streamed download and a streamed upload (1 GiB by default), once per
  round: median MB/s, the CPU time the proxy spends per GiB (steadier than
  MB/s when the three processes compete for two cores) and the largest peak
  RSS growth of the proxy process
- N concurrent requests (2,000 by default) held open 1 s by the upstream:
  errors and peak RSS of the proxy process

Load comes from `wrk` when it is installed (the script installs it with apt
when it runs as root and apt is there), otherwise from an aiohttp client.
Targets: added p50 < 0.5 ms, throughput >= 85% of the forwarder's; 1 GiB up
and down with RSS growth < 64 MiB at >= 80% of the forwarder's MB/s; 2,000
slow requests with no errors and RSS < 300 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
SMALL = "/fabrikam/_apis/projects?api-version=7.1"
# The same list as Azure DevOps sends it, with the URLs the gateway rewrites.
SMALL_URLS = "/fabrikam/_apis/projects?api-version=7.1&withUrls=1"
SLOW = "/fabrikam/_apis/projects/slow?api-version=7.1"
DOWN = "/fabrikam/Fiber/_apis/git/repositories/fiber/items?path=/big.bin&size={n}"
UP = "/fabrikam/Fiber/_git/fiber/git-receive-pack"
MIB = 1024 * 1024
BLOCK = os.urandom(MIB)
PROJECTS = json.dumps(
    {
        "count": 2,
        "value": [
            {
                "id": "eb6e4656-77fc-42a1-9181-4c6d8e9da5d1",
                "name": "Fabrikam-Fiber",
                "state": "wellFormed",
                "revision": 411,
                "visibility": "private",
            },
            {
                "id": "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c",
                "name": "Fabrikam-Web",
                "state": "wellFormed",
                "revision": 12,
                "visibility": "private",
            },
        ],
    }
).encode()


# --- the processes under test -------------------------------------------------------


def with_urls(origin: str) -> bytes:
    """PROJECTS as Azure DevOps answers it: every project carries its URL."""
    doc = json.loads(PROJECTS)
    for project in doc["value"]:
        project["url"] = f"{origin}/fabrikam/_apis/projects/{project['id']}"
    return json.dumps(doc).encode()


def upstream_app() -> web.Application:
    async def small(request: web.Request) -> web.Response:
        if "withUrls" in request.query:
            body = with_urls(f"{request.scheme}://{request.host}")
            return web.Response(body=body, content_type="application/json")
        return web.Response(body=PROJECTS, content_type="application/json")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(body=PROJECTS, content_type="application/json")

    async def down(request: web.Request) -> web.StreamResponse:
        n = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = n
        await response.prepare(request)
        while n > 0:
            await response.write(BLOCK[: min(n, MIB)])
            n -= MIB
        return response

    async def up(request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        return web.json_response({"received": n})

    app = web.Application(client_max_size=0)
    app.router.add_get("/fabrikam/_apis/projects", small)
    app.router.add_get("/fabrikam/_apis/projects/slow", slow)
    app.router.add_get("/fabrikam/Fiber/_apis/git/repositories/fiber/items", down)
    app.router.add_post(UP, up)
    return app


def bare_forward(
    upstream: str, session: aiohttp.ClientSession
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """What any aiohttp reverse proxy has to do for a request, and nothing more."""

    async def forward(request: web.BaseRequest) -> web.StreamResponse:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "transfer-encoding", "connection")
        }
        data = request.content if request.body_exists else None
        async with session.request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
        ) as up:
            response = web.StreamResponse(status=up.status)
            for name in ("Content-Type", "Content-Length"):
                if name in up.headers:
                    response.headers[name] = up.headers[name]
            try:
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # the load generator hung up at the end of a run
                pass
            return response

    return forward


def forwarder_server(upstream: str, session: aiohttp.ClientSession) -> web.Server:
    """The baseline: `bare_forward` on the same aiohttp server (the low-level
    `web.Server`, as the gateway's listener) and the same client (the gateway's
    own `open_session`: connection limits, no cookie jar, no automatic headers,
    no decompression)."""
    return web.Server(bare_forward(upstream, session), access_log=None, handler_cancellation=True)


def serve_role(role: str, upstream: str) -> None:
    """Child process: serve the upstream or the forwarder, print the port, run forever."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> None:
        runner: web.BaseRunner
        if role == "upstream":
            runner = web.AppRunner(upstream_app(), access_log=None)
        else:
            from gateway.config.model import Upstream
            from gateway.proxy.upstream import open_session

            session = open_session(Upstream(hosts={"main": upstream}))
            runner = web.ServerRunner(forwarder_server(upstream, session))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# --- measuring ----------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples a process's RSS every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.start, self.peak = pid, rss_mib(pid), 0.0

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.pid))
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> PeakRss:
        self.start = self.peak = rss_mib(self.pid)
        self.task = asyncio.ensure_future(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        self.peak = max(self.peak, rss_mib(self.pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ensure_wrk() -> str | None:
    if shutil.which("wrk"):
        return shutil.which("wrk")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True, check=False)
    return shutil.which("wrk")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def wrk(url: str, auth: str, connections: int, seconds: float) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-H",
        f"Authorization: {auth}",
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out = (await proc.communicate())[0].decode()
    if "Requests/sec" not in out:
        raise SystemExit(f"wrk failed against {url}:\n{out}")
    got = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])}  # type: ignore[index]
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        got[key] = _ms(re.search(rf"\s{pct}%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    got["errors"] = float(errors[1]) if errors else 0.0
    return got


async def py_load(url: str, auth: str, connections: int, seconds: float) -> dict[str, float]:
    """Fallback load generator: `connections` loops of back-to-back requests."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                async with s.get(url, headers={"Authorization": auth}) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(loop() for _ in range(connections)))
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "errors": float(errors),
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def streamed(nbytes: int, seconds: float, rss: PeakRss) -> dict[str, float]:
    """The figures of one streamed transfer."""
    return {
        "MB_s": nbytes / seconds / 1e6,
        "seconds": seconds,
        "bytes": nbytes,
        "rss_growth_mib": rss.peak - rss.start,
    }


async def download(url: str, auth: str, pid: int) -> dict[str, float]:
    got = 0
    async with aiohttp.ClientSession(auto_decompress=False) as s, PeakRss(pid) as rss:
        t = time.perf_counter()
        async with s.get(url, headers={"Authorization": auth}) as r:
            assert r.status == 200, r.status
            async for chunk in r.content.iter_any():
                got += len(chunk)
        seconds = time.perf_counter() - t
    return streamed(got, seconds, rss)


async def upload(url: str, auth: str, pid: int, n: int) -> dict[str, float]:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(n // MIB):
            yield BLOCK

    async with aiohttp.ClientSession() as s, PeakRss(pid) as rss:
        t = time.perf_counter()
        async with s.post(url, data=body(), headers={"Authorization": auth}) as r:
            assert r.status == 200, (r.status, await r.text())
            received = (await r.json())["received"]
        seconds = time.perf_counter() - t
    assert received == n, received
    return streamed(n, seconds, rss)


async def concurrent(url: str, auth: str, pid: int, n: int) -> dict[str, float]:
    errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as s,
        PeakRss(pid) as rss,
    ):

        async def one() -> None:
            nonlocal errors
            try:
                async with s.get(url, headers={"Authorization": auth}) as r:
                    await r.read()
                    errors += r.status != 200
            except aiohttp.ClientError:
                errors += 1

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        seconds = time.perf_counter() - t
    return {"errors": float(errors), "seconds": seconds, "rss_peak_mib": rss.peak}


# --- orchestration ------------------------------------------------------------------


async def spawn_role(
    role: str, upstream: str = "", *, under: Sequence[str] = ()
) -> tuple[asyncio.subprocess.Process, str]:
    """This script as the upstream or the forwarder (`under`: a command to run it
    under, such as valgrind's)."""
    proc = await asyncio.create_subprocess_exec(
        *under,
        sys.executable,
        __file__,
        "--role",
        role,
        "--upstream",
        upstream,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
    return proc, f"http://127.0.0.1:{port}"


async def _drain(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        if os.environ.get("BENCH_VERBOSE"):
            sys.stderr.write("gateway: " + line.decode())


@contextlib.contextmanager
def worktree(rev: str | None) -> Iterator[Path | None]:
    """A temporary checkout of git revision `rev` (None: nothing)."""
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rev"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(path), rev], check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "remove", "--force", str(path)], check=False)


async def spawn_gateway(
    tmp: Path,
    upstream: str,
    code: Path | None = None,
    *,
    under: Sequence[str] = (),
    entry: Sequence[str] = ("-m", "gateway"),
    audit: bool = True,
) -> tuple[asyncio.subprocess.Process, str, str]:
    """`azdo-gateway run --workers 1` on `upstream`, its files in `tmp`; the gateway
    package imported from `code` (a checkout of another revision) if given; run
    under the command `under` if given; `entry`: what Python runs instead of the
    gateway's own command line (a script that takes the same arguments); without
    an audit trail (`audit.file: null`) if `audit` is false."""
    key = "azgw_bench_" + secrets.token_urlsafe(24)
    (tmp / "clients.yaml").write_text(
        json.dumps(
            {
                "clients": [
                    {
                        "name": "bench",
                        "credential": "server",
                        "scopes": ["vso.project", "vso.code_write"],
                        "api_keys": [
                            {"id": "b1", "sha256": hashlib.sha256(key.encode()).hexdigest()}
                        ],
                    }
                ]
            }
        )
    )
    (tmp / "gateway.yaml").write_text(
        json.dumps(
            {
                "listen": {"host": "127.0.0.1", "port": 0, "public_url": "http://127.0.0.1:8080"},
                "admin": {"host": "127.0.0.1", "port": 0},
                "upstream": {"hosts": {"main": upstream}},
                "credentials": {"server": {"type": "pat", "pat": "bench-upstream-pat"}},
                "policies": ["clients.yaml"],
                "audit": {"file": str(tmp / "audit.jsonl") if audit else None},
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        *under,
        sys.executable,
        *entry,
        "run",
        "-c",
        str(tmp / "gateway.yaml"),
        "--workers",
        "1",
        # `-m` imports from the working directory first: the checkout to measure
        cwd=code or ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    while line := (await asyncio.wait_for(proc.stderr.readline(), 60)).decode():
        if "serving on" in line:
            url = line.split("serving on ")[1].split()[0]
            asyncio.ensure_future(_drain(proc.stderr))  # keep the pipe drained
            return proc, url, aiohttp.encode_basic_auth("", key)
    raise SystemExit("the gateway did not start")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with worktree(args.against) as code:
        return await _bench(args, code)


async def _bench(args: argparse.Namespace, code: Path | None) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    load = wrk if ensure_wrk() else py_load
    procs: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            up, upstream = await spawn_role("upstream")
            fwd, forwarder = await spawn_role("forwarder", upstream)
            (Path(tmp) / "current").mkdir()
            gw, gateway, auth = await spawn_gateway(Path(tmp) / "current", upstream)
            procs += [up, fwd, gw]
            targets = {"gateway": (gateway, gw.pid, auth), "forwarder": (forwarder, fwd.pid, auth)}
            small_targets = dict(targets)  # the small-request tests: and the other revision
            if code is not None:
                (Path(tmp) / "against").mkdir()
                other, other_url, key = await spawn_gateway(Path(tmp) / "against", upstream, code)
                procs.append(other)
                small_targets["against"] = (other_url, other.pid, key)
            results: dict[str, Any] = {
                "load_generator": load.__name__,
                "cpus": os.cpu_count(),
                "loadavg_before": os.getloadavg()[0],
            }
            for url, _, key in small_targets.values():  # warm up: connections, caches
                await load(url + SMALL, key, 8, 1)
            for test, connections, path in (
                ("latency", 1, SMALL),
                ("throughput", 64, SMALL),
                ("throughput_urls", 64, SMALL_URLS),
            ):
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in small_targets}
                for _ in range(args.rounds):
                    for name, (url, pid, key) in small_targets.items():
                        before = cpu_seconds(pid)
                        run = await load(url + path, key, connections, args.duration)
                        if run["errors"]:  # figures of error answers measure nothing
                            raise SystemExit(f"{name}: {run['errors']:.0f} answers were not 2xx")
                        spent = cpu_seconds(pid) - before
                        run["cpu_ms_per_request"] = spent * 1000 / (run["rps"] * args.duration)
                        runs[name].append(run)
                results[test] = {
                    name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                    for name, rs in runs.items()
                }
            n = args.big_mib * MIB
            for test in ("download", "upload"):
                streams: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, (url, pid, _) in targets.items():
                        before = cpu_seconds(pid)
                        if test == "download":
                            run = await download(url + DOWN.format(n=n), auth, pid)
                        else:
                            run = await upload(url + UP, auth, pid, n)
                        run["cpu_s_per_gib"] = (cpu_seconds(pid) - before) * (1 << 30) / n
                        streams[name].append(run)
                results[test] = {
                    name: {
                        "MB_s": statistics.median(r["MB_s"] for r in rs),
                        "MB_s_runs": [r["MB_s"] for r in rs],
                        "cpu_s_per_gib": statistics.median(r["cpu_s_per_gib"] for r in rs),
                        "rss_growth_mib": max(r["rss_growth_mib"] for r in rs),
                    }
                    for name, rs in streams.items()
                }
            results["slow_concurrent"] = {
                name: await concurrent(url + SLOW, auth, pid, args.concurrent)
                for name, (url, pid, _) in targets.items()
            }
            results["loadavg_after"] = os.getloadavg()[0]
            return results
        finally:
            await stop(procs)


async def stop(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """End the benchmark's processes (those that are still running) and reap them."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    g, f = "gateway", "forwarder"
    lat, thr, rw = r["latency"], r["throughput"], r["throughput_urls"]
    lines = [
        f"load generator: {r['load_generator']}, {r['cpus']} CPUs, "
        f"{args.rounds} rounds of {args.duration}s, medians; 1-min load average "
        f"{r['loadavg_before']:.1f} before, {r['loadavg_after']:.1f} after",
        "",
        "                          gateway   forwarder   gateway/forwarder",
        f"latency p50 (1 conn)    {lat[g]['p50_ms']:7.3f} ms {lat[f]['p50_ms']:7.3f} ms"
        f"   +{lat[g]['p50_ms'] - lat[f]['p50_ms']:.3f} ms added",
        f"latency p99 (1 conn)    {lat[g]['p99_ms']:7.3f} ms {lat[f]['p99_ms']:7.3f} ms"
        f"   {ratio(lat[g]['p99_ms'], lat[f]['p99_ms'])}",
        f"requests/s (64 conns)   {thr[g]['rps']:10.0f} {thr[f]['rps']:11.0f}"
        f"   {ratio(thr[g]['rps'], thr[f]['rps'])}",
        f"p50 / p99 (64 conns)    {thr[g]['p50_ms']:.2f}/{thr[g]['p99_ms']:.2f} ms"
        f"  {thr[f]['p50_ms']:.2f}/{thr[f]['p99_ms']:.2f} ms",
        f"CPU per request         {thr[g]['cpu_ms_per_request']:7.3f} ms"
        f" {thr[f]['cpu_ms_per_request']:7.3f} ms"
        f"   {ratio(thr[g]['cpu_ms_per_request'], thr[f]['cpu_ms_per_request'])}",
        "with URLs to rewrite:",
        f"requests/s (64 conns)   {rw[g]['rps']:10.0f} {rw[f]['rps']:11.0f}"
        f"   {ratio(rw[g]['rps'], rw[f]['rps'])}",
        f"CPU per request         {rw[g]['cpu_ms_per_request']:7.3f} ms"
        f" {rw[f]['cpu_ms_per_request']:7.3f} ms"
        f"   {ratio(rw[g]['cpu_ms_per_request'], rw[f]['cpu_ms_per_request'])}",
    ]
    if "against" in thr:
        lines.append(f"the gateway at {args.against}, side by side:")
        for label, t in (("small", thr), ("with URLs", rw)):
            a = t["against"]
            lines.append(
                f"  {label:<9} requests/s {a['rps']:7.0f} ({ratio(a['rps'], t[f]['rps'])} of"
                f" the forwarder's), CPU per request {a['cpu_ms_per_request']:.3f} ms"
                f" (now {t[g]['cpu_ms_per_request']:.3f})"
            )
    for test in ("download", "upload"):
        d = r[test]
        lines.append(
            f"{args.big_mib} MiB {test:<8}       {d[g]['MB_s']:7.0f} MB/s {d[f]['MB_s']:6.0f} MB/s"
            f"   {ratio(d[g]['MB_s'], d[f]['MB_s'])}   RSS growth {d[g]['rss_growth_mib']:.1f}"
            f" / {d[f]['rss_growth_mib']:.1f} MiB"
        )
        cpu_g, cpu_f = d[g]["cpu_s_per_gib"], d[f]["cpu_s_per_gib"]
        lines.append(
            f"  CPU per GiB           {cpu_g:7.2f} s  {cpu_f:7.2f} s    {ratio(cpu_g, cpu_f)}"
        )
    s = r["slow_concurrent"]
    lines.append(
        f"{args.concurrent} slow requests      errors {s[g]['errors']:.0f} / {s[f]['errors']:.0f}"
        f", peak RSS {s[g]['rss_peak_mib']:.0f} / {s[f]['rss_peak_mib']:.0f} MiB,"
        f" done in {s[g]['seconds']:.2f} / {s[f]['seconds']:.2f} s"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5, help="seconds per load run (5)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per test (3)")
    p.add_argument("--big-mib", type=int, default=1024, help="streamed body size (1024)")
    p.add_argument("--concurrent", type=int, default=2000, help="slow requests at once (2000)")
    p.add_argument("--json", help="also write the raw figures to this file")
    p.add_argument(
        "--against", help="also measure the gateway at this git revision (small requests)"
    )
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        serve_role(args.role, args.upstream)
        return
    results = asyncio.run(bench(args))
    print(report(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
