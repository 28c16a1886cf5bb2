"""Cost per call of each request-path stage, in process, on one realistic request.

    python bench/stage_bench.py [--n 20000] [--baseline REV] [--uvloop]

Builds the configuration `proxy_bench.py` gives the gateway (one client with a
gateway key, a PAT credential, an audit file) and times each stage function on
the request that benchmark sends (`GET /fabrikam/_apis/projects?api-version=7.1`
with a key as HTTP Basic): canonicalization, authentication, limits, catalog
match, policy, token, metrics and the audit line, then the forwarder's own work
on the answer (header cleaning, the credential search, the rewriter's look, a
read deadline, `Forwarder.forward` whole). Prints the best of 5
rounds of the mean µs per call (the least disturbed by other work, as timeit
advises).

`--baseline REV` also runs the same measurements on the `gateway` package of git
revision REV (extracted to a temporary directory) and prints both columns, the
two alternating round by round so that both see the same machine. `--uvloop`
runs the stages on uvloop's event loop, as the gateway's workers do.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "azgw_bench_" + "k" * 32
PATH = "/fabrikam/_apis/projects?api-version=7.1"
BATCH = 32  # audit lines per write()
BATCHED = ("AuditLog.write (record, encode, write)", "Observability.started+finished")


def write_config(tmp: Path) -> Path:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    client = {
        "name": "bench",
        "credential": "server",
        "scopes": ["vso.project", "vso.code_write"],
        "api_keys": [{"id": "b1", "sha256": digest}],
    }
    (tmp / "clients.yaml").write_text(json.dumps({"clients": [client]}))
    gateway = {
        "listen": {"host": "127.0.0.1", "port": 0, "public_url": "http://127.0.0.1:8080"},
        "upstream": {"hosts": {"main": "http://127.0.0.1:9"}},
        "credentials": {"server": {"type": "pat", "pat": "bench-upstream-pat"}},
        "policies": ["clients.yaml"],
        "audit": {"file": str(tmp / "audit.jsonl")},
    }
    (tmp / "gateway.yaml").write_text(json.dumps(gateway))
    return tmp / "gateway.yaml"


def stages(tmp: Path) -> dict[str, Callable[[], Any]]:
    """name -> a no-argument callable running that stage once (sync or coroutine)."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from gateway.authn import Authentication
    from gateway.authn.base import presented_credential
    from gateway.canonical import canonicalize, check_headers, effective_method
    from gateway.catalog import Catalog
    from gateway.config.load import load
    from gateway.limits import Limiter
    from gateway.observability import Observability
    from gateway.observability.audit import encode_line, record, utc_ms
    from gateway.policy import Policy
    from gateway.tokens import TokenBroker
    from gateway.types import RequestContext

    config = load(write_config(tmp))
    gw = config.gateway
    headers = {
        "Host": "127.0.0.1:8080",
        "User-Agent": "bench/1.0",
        "Accept": "application/json",
        "Authorization": aiohttp.encode_basic_auth("", KEY),
    }
    request = make_mocked_request("GET", PATH, headers=headers)
    catalog = Catalog.builtin()
    policy = Policy(config, catalog)
    authn = Authentication(config)
    tokens = TokenBroker(config)
    limiter = Limiter()
    observability = Observability(config)
    client = config.client("bench")
    assert client is not None

    def fresh() -> RequestContext:
        return RequestContext(request_id="0f8fad5b-d9cb-469f-a165-70867728950e", method="GET")

    ctx = fresh()
    hosts, max_url = gw.upstream.hosts, gw.limits.max_url_length

    def canonical() -> None:
        target = canonicalize(request.raw_path, hosts, max_length=max_url)
        ctx.host, ctx.path, ctx.query = target.host, target.path, target.query
        items = request.headers.items()
        overridden = check_headers(items)
        ctx.effective_method = effective_method(ctx.method, items) if overridden else ctx.method

    canonical()

    async def authenticate() -> None:
        ctx.identity = await authn.authenticate(request, ctx)

    def match() -> None:
        ctx.match = catalog.match(ctx.host, ctx.effective_method, ctx.path, ctx.query)

    def authorize() -> None:
        ctx.decision = policy.authorize(ctx.identity, ctx)  # type: ignore[arg-type]

    async def acquire() -> None:
        await tokens.acquire(ctx.identity, client)  # type: ignore[arg-type]

    # the headers Azure DevOps answers a project list with (no rate-limit headers)
    response = web.Response(
        status=200,
        headers={
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
            "Content-Type": "application/json; charset=utf-8",
            "Expires": "-1",
            "P3P": 'CP="CAO DSP COR ADMa DEV CONo TELo CUR PSA PSD TAI IVDo OUR SAMi BUS DEM"',
            "X-TFS-ProcessId": "8a4b5d5c-2f0e-4f4e-9a8f-0c1b2d3e4f5a",
            "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
            "ActivityId": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "X-TFS-Session": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "X-VSS-E2EID": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "X-VSS-SenderDeploymentId": "e2a7c5f1-8b7d-4a5e-9c3b-1d2e3f4a5b6c",
            "X-Frame-Options": "SAMEORIGIN",
            "X-Content-Type-Options": "nosniff",
            "Date": "Wed, 25 Nov 2026 10:00:00 GMT",
        },
    )

    async def answered() -> web.StreamResponse:
        ctx.upstream_status = 200
        return response

    async def guard() -> None:
        await limiter.guard(client, ctx, answered, observability.metrics)

    def enter_leave() -> None:
        limiter.enter(gw.limits.max_inflight)
        limiter.leave()

    asyncio.run(authenticate())
    match()
    authorize()
    ctx.credential, ctx.status, ctx.upstream_status = "server", 200, 200
    ctx.upstream_seconds, ctx.bytes_out = 0.0012, 2048
    ctx.source, ctx.user_agent = "127.0.0.1", headers["User-Agent"]  # as the request id stage

    audit = observability.audit

    # Under load many requests finish per turn of the event loop, and their audit
    # lines go out in one write(): these two run BATCH times, then flush (observe:
    # the loop turns, running what the turn scheduled: the write, the in-flight gauge).
    async def observe() -> None:
        for _ in range(BATCH):
            observability.started(ctx)
            observability.finished(ctx)
        await asyncio.sleep(0)

    async def observe_alone() -> None:  # the same, one request a turn
        observability.started(ctx)
        observability.finished(ctx)
        await asyncio.sleep(0)

    def audit_write() -> None:
        for _ in range(BATCH):
            audit.write(record(ctx, 0.0021))
        audit.flush()

    # The whole pipeline as the proxy's handler runs it, with the forwarder's
    # upstream call replaced by the answer above: what the stages and their
    # composition cost together per request.
    from gateway.app import Gateway, build_runtime

    whole = Gateway(build_runtime(config, catalog), observability)

    async def forwarded(*args: Any, **kwargs: Any) -> web.StreamResponse:
        return web.Response(body=b'{"count":0,"value":[]}', status=200)

    whole.forwarder.forward = forwarded  # type: ignore[method-assign]
    whole_request = make_mocked_request("GET", PATH, headers=headers, payload=_EmptyBody())

    async def handle() -> None:
        await whole.handle(whole_request)

    proxied = forwarding(config, observability, tokens, client, ctx, response)
    now = time.time()
    entry = record(ctx, 0.0021)
    return {
        "canonicalize+check_headers+effective_method": canonical,
        "presented_credential": lambda: presented_credential(request.headers),
        "FailureThrottle.check": lambda: authn.throttle.check(request.remote),
        "Authentication.authenticate": authenticate,
        "Limiter.enter+leave": enter_leave,
        "Limiter.guard (no rate_limit)": guard,
        "Catalog.match": match,
        "Policy.authorize": authorize,
        "TokenBroker.acquire (PAT)": acquire,
        "Metrics.request_finished": lambda: observability.metrics.request_finished(ctx, 0.0021),
        "audit record": lambda: record(ctx, 0.0021),
        "audit encode_line": lambda: encode_line(entry),
        "utc_ms": lambda: utc_ms(now),
        "AuditLog.write (record, encode, write)": audit_write,
        "Observability.started+finished": observe,
        "Observability.started+finished (1 a turn)": observe_alone,
        "Gateway.handle (whole pipeline, no upstream)": handle,
        **proxied,
    }


def forwarding(
    config: Any, observability: Any, tokens: Any, client: Any, ctx: Any, answer: Any
) -> dict[str, Callable[[], Any]]:
    """The forwarder's stages: header cleaning both ways, the credential search,
    the rewriter's look at the answer, and `Forwarder.forward` whole with the
    upstream answering at once (`answer`'s headers and a small JSON body, whole:
    as a project list arrives)."""
    import aiohttp
    from aiohttp.helpers import TimerNoop
    from aiohttp.streams import EmptyStreamReader, StreamReader
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    from gateway.app import build_runtime
    from gateway.catalog import Catalog
    from gateway.proxy import headers as hdrs
    from gateway.proxy import leaks, upstream
    from gateway.proxy.forward import Forwarder
    from gateway.proxy.upstream import _Response

    fw = build_runtime(config, Catalog.builtin()).forwarding
    rewriter = fw.rewriter
    assert rewriter is not None
    headers = {
        "Host": "127.0.0.1:8080",
        "User-Agent": "bench/1.0",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate, br",
        "Authorization": aiohttp.encode_basic_auth("", KEY),
        "Connection": "keep-alive",
    }
    request = make_mocked_request("GET", PATH, headers=headers, payload=EmptyStreamReader())
    upstream_headers = CIMultiDictProxy(CIMultiDict(answer.headers))
    body = b'{"count":1,"value":[{"id":"4f2d","name":"Fabrikam","state":"wellFormed"}]}'
    secrets = leaks.forms("Basic " + "c2VydmVyOmJlbmNoLXVwc3RyZWFtLXBhdA==")
    cleaned = hdrs.to_client(upstream_headers)

    class Sent:
        output_size = 0

    class Protocol:
        def resume_reading(self, resume_parser: bool = True) -> None: ...

    class Session:
        """Answers every request at once, as `ClientSession.request` returns."""

        def __init__(self, headers: CIMultiDictProxy[str]) -> None:
            self.headers = headers
            self.raw = tuple((k.encode(), v.encode()) for k, v in headers.items())

        async def request(self, method: str, url: Any, **kw: Any) -> Any:
            loop = asyncio.get_running_loop()
            info = aiohttp.RequestInfo(url, method, CIMultiDictProxy(kw["headers"]), url)
            up = _Response(
                method,
                url,
                writer=None,
                continue100=None,
                timer=TimerNoop(),
                request_info=info,
                traces=[],
                loop=loop,
                session=None,  # type: ignore[arg-type]
                stream_writer=Sent(),  # type: ignore[arg-type]
            )
            up.status, up.reason = 200, "OK"
            up._headers, up._raw_headers = self.headers, self.raw
            up.content = StreamReader(Protocol(), 2**16, loop=loop)  # type: ignore[arg-type]
            up.content.feed_data(body)
            up.content.feed_eof()
            return up

    # the same answer as a body the rewriter does not read
    plain = CIMultiDict(upstream_headers)
    plain["Content-Type"] = "application/octet-stream"

    def forwarding(answer: CIMultiDictProxy[str]) -> Callable[[], Any]:
        forwarder = Forwarder(config, observability)
        forward_ctx = copy.copy(ctx)

        async def forward() -> None:
            if forwarder.session is None:
                await forwarder.start()
                await forwarder.session.close()  # type: ignore[union-attr]
                forwarder.session = Session(answer)  # type: ignore[assignment]
            await forwarder.forward(request, forward_ctx, fw, tokens, client)

        return forward

    async def answered_at_once() -> None:
        pass

    async def timeout() -> None:
        async with asyncio.timeout(30):
            await answered_at_once()

    rows: dict[str, Callable[[], Any]] = {"asyncio.timeout (a block ended in time)": timeout}
    try:
        from gateway.proxy.upstream import Deadlines
    except ImportError:  # a revision without it
        pass
    else:
        deadlines: list[Any] = []

        async def deadline() -> None:
            if not deadlines:
                deadlines.append(Deadlines(asyncio.get_running_loop()))
            with deadlines[0].within(30):
                await answered_at_once()

        rows["Deadlines.within (a block ended in time)"] = deadline
    answers: list[Any] = []

    async def check() -> None:  # what every answer's headers are checked for (upstream.check)
        if not answers:
            url = URL("http://127.0.0.1:9/")
            answers.append(
                await Session(upstream_headers).request("GET", url, headers=CIMultiDict())
            )
        upstream.check(answers[0])

    rows["upstream.check (the answer's head)"] = check
    return rows | {
        "headers.to_upstream": lambda: hdrs.to_upstream(request.headers),
        "headers.to_client": lambda: hdrs.to_client(upstream_headers),
        "leaks.scrub_headers": lambda: leaks.scrub_headers(cleaned, secrets),
        # what relay asks the rewriter of a JSON answer (a revision without look: wants_body)
        "Rewriter.look (JSON answer)": lambda: getattr(rewriter, "look", rewriter.wants_body)(
            upstream_headers, ctx.path
        ),
        "Forwarder.forward (upstream answers at once)": forwarding(upstream_headers),
        "Forwarder.forward (the same, not JSON)": forwarding(CIMultiDictProxy(plain)),
    }


class _EmptyBody:
    """The request body stream of a GET: nothing, and nothing read."""

    total_bytes = 0


async def per_call_us(fn: Callable[[], Any], n: int) -> float:
    """Mean µs per call over n calls (after a warm-up); awaits coroutines."""
    probe = fn()
    is_async = isinstance(probe, Awaitable)
    if is_async:
        await probe
    t0 = time.perf_counter()
    if is_async:
        for _ in range(n):
            await fn()
    else:
        for _ in range(n):
            fn()
    return (time.perf_counter() - t0) / n * 1e6


def measure(n: int, rounds: int) -> dict[str, list[float]]:
    """name -> µs per call of each round."""
    with tempfile.TemporaryDirectory() as tmp:
        todo = stages(Path(tmp))
        out: dict[str, list[float]] = {name: [] for name in todo}

        async def run() -> None:
            for _ in range(rounds):
                for name, fn in todo.items():
                    batch = BATCH if name in BATCHED else 1
                    us = await per_call_us(fn, n // batch)
                    out[name].append(us / batch)

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(run())
    return out


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's, as the gateway's workers run, when STAGE_BENCH_LOOP=uvloop."""
    if os.environ.get("STAGE_BENCH_LOOP") != "uvloop":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "gateway", "policies"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def child(root: Path, n: int, rounds: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    argv = [sys.executable, __file__, "--child", str(root), "--n", str(n), "--rounds", str(rounds)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="calls per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline", help="git revision to compare against (e.g. main~3)")
    p.add_argument("--uvloop", action="store_true", help="on uvloop, as the gateway runs")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.uvloop:
        os.environ["STAGE_BENCH_LOOP"] = "uvloop"
    if args.child:
        sys.path.insert(0, args.child)
        print(json.dumps(measure(args.n, args.rounds)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        roots = {"current": ROOT}
        if args.baseline:
            roots = {args.baseline: extract(args.baseline, Path(tmp)), "current": ROOT}
        rounds: dict[str, dict[str, list[float]]] = {label: {} for label in roots}
        for _ in range(args.rounds):  # alternate, one round each, so both see the same load
            for label, root in roots.items():
                out, _ = child(root, args.n, 1).communicate()
                for name, values in json.loads(out).items():
                    rounds[label].setdefault(name, []).extend(values)
    labels = list(roots)
    names = list(rounds["current"])
    print(f"µs per call, best of {args.rounds} rounds of {args.n} calls")
    print(f"{'stage':46s}" + "".join(f"{label:>12s}" for label in labels))
    for name in names:
        cells = ""
        for label in labels:
            values = rounds[label].get(name)
            cells += f"{min(values):12.2f}" if values else f"{'-':>12s}"
        print(f"{name:46s}{cells}")


if __name__ == "__main__":
    main()
