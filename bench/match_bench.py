"""Matching + policy decision cost over the full built-in catalog.

    python bench/match_bench.py [--n 200000]

Replays a mix of real request paths (every catalog template instantiated, plus
git, packaging, discovery and unmatched paths) through canonicalize ->
Catalog.match -> Policy.authorize, timing each request, and prints the
p50 / p99 / p99.9 per request. Target: p99 under 20 µs.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.canonical import canonicalize, effective_method  # noqa: E402
from gateway.catalog import ANY_HOST, Catalog  # noqa: E402
from gateway.config.model import (  # noqa: E402
    DEFAULT_HOSTS,
    Client,
    Config,
    GatewayConfig,
    Route,
    RouteMatch,
)
from gateway.policy import Policy  # noqa: E402
from gateway.types import ClientIdentity, RequestContext  # noqa: E402


def requests(catalog: Catalog) -> list[tuple[str, str]]:
    out = []
    for op in catalog.operations:
        path = re.sub(r"\{([^}]+)\}", "Fabrikam-Fiber", op.template).replace("**", "a/b/c")
        host = "main" if op.host == ANY_HOST else op.host
        prefix = "" if host == "main" else f"/_hosts/{host}"
        out.append((op.method, prefix + path + "?api-version=7.1"))
    out += [
        ("GET", "/fabrikam/Fiber/_git/repo/info/refs?service=git-upload-pack"),
        ("POST", "/fabrikam/Fiber/_git/repo/git-upload-pack"),
        ("GET", "/_hosts/pkgs/fabrikam/_packaging/feed/nuget/v3/index.json"),
        ("GET", "/fabrikam/Fiber/_apis/no/such/thing"),
        ("GET", "/fabrikam/Fiber/%5Fapis/git/repositories"),
    ]
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200_000)
    args = p.parse_args()
    t0 = time.perf_counter()
    catalog = Catalog.builtin()
    load = time.perf_counter() - t0
    clients = (
        Client(
            name="ci",
            credential="c",
            scopes=("vso.code", "vso.build_execute"),
            projects=("fabrikam/Fabrikam-Fiber", "fabrikam/Fiber"),
        ),
    )
    routes = tuple(
        Route(
            name=f"r{i}",
            match=RouteMatch(
                method=("DELETE",), path=f"/{{organization}}/{{project}}/_apis/area{i}/**"
            ),
            deny=True,
        )
        for i in range(10)
    )
    config = Config(
        path=Path("bench.yaml"), gateway=GatewayConfig(), clients=clients, routes=routes
    )
    policy = Policy(config, catalog)
    identity = ClientIdentity(client="ci", auth_method="api_key", subject="k")
    hosts = tuple(DEFAULT_HOSTS)
    reqs = requests(catalog)
    random.seed(1)
    sample = [random.choice(reqs) for _ in range(args.n)]
    prepared = []
    for method, target in sample:
        t = canonicalize(target, hosts)
        prepared.append((method, t))
    results: dict[str, list[int]] = {}
    allowed = 0
    for clock_name, clock in (("wall", time.perf_counter_ns), ("cpu", time.thread_time_ns)):
        canon, decide = [], []
        for (method, target), (_, t) in zip(sample, prepared, strict=True):
            ctx = RequestContext(request_id="b", method=method)  # the request id stage's
            start = clock()
            canonicalize(target, hosts)
            effective_method(method, ())
            mid = clock()
            ctx.host, ctx.path, ctx.query = t.host, t.path, t.query
            ctx.effective_method = method
            ctx.match = catalog.match(ctx.host, method, ctx.path, ctx.query)
            decision = policy.authorize(identity, ctx)
            end = clock()
            canon.append(mid - start)
            decide.append(end - mid)
            allowed += decision.allowed
        results[f"canonicalize ({clock_name})"] = canon
        results[f"match + authorize ({clock_name})"] = decide
        results[f"all three ({clock_name})"] = [a + b for a, b in zip(canon, decide, strict=True)]
    print(
        f"catalog: {len(catalog)} operations, loaded in {load * 1000:.0f} ms; {args.n} "
        f"requests over {len(reqs)} distinct paths, {allowed // 2} allowed"
    )
    for name, timings in results.items():
        timings.sort()

        def pct(q: float, timings: list[int] = timings) -> float:
            return timings[min(len(timings) - 1, int(q * len(timings)))] / 1000

        print(
            f"{name:28} mean {statistics.fmean(timings) / 1000:5.1f} µs  p50 {pct(0.5):5.1f} µs"
            f"  p99 {pct(0.99):5.1f} µs  p99.9 {pct(0.999):7.1f} µs"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
