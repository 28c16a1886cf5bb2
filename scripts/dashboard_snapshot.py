"""Draw the panels of deploy/grafana/azdo-gateway.json from a real, local run.

    python scripts/dashboard_snapshot.py [--seconds 60] [--out docs/images/dashboard.png]

Starts `azdo-gateway demo`'s stand-ins and gateway on loopback, adds a
rate-limited client through a hot reload (and tries one bad reload), drives a
mixed load (allowed, denied, unauthenticated, rate-limited requests) for the
given time, scrapes the admin `/metrics` every two seconds, and draws the
dashboard's main panels with matplotlib from those scrapes. The picture is not a
Grafana screenshot: it computes the same rates and quantiles as the dashboard's
queries, from the same metrics, over a short run against stand-ins.
Needs matplotlib (`pip install matplotlib`); not a runtime dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.authn.api_key import key_sha256, new_key
from gateway.demo.examples import PROJECT
from gateway.demo.run import BOT, READER, start_demo
from gateway.reload import Reloader

API = "api-version=7.1"
Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Sample:
    out: Sample = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(sample: Sample, name: str, by: str | None = None, **match: str) -> dict[str, float]:
    acc: dict[str, float] = defaultdict(float)
    for (n, labels), v in sample.items():
        d = dict(labels)
        if n == name and all(d.get(k) == val for k, val in match.items()):
            acc[d.get(by, "") if by else "all"] += v
    return acc


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative bucket increases."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    rank, prev_le, prev_n = q * items[-1][1], 0.0, 0.0
    for le, n in items:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_n) / max(n - prev_n, 1e-9))
        prev_le, prev_n = le, n
    return prev_le


async def drive(demo: Any, seconds: float, scrapes: list[tuple[float, Sample]]) -> None:
    gw = demo.url
    keys = demo.keys
    auth = {
        name: {"Authorization": aiohttp.encode_basic_auth("", key)} for name, key in keys.items()
    }
    calls = [
        (READER, "GET", f"/fabrikam/_apis/projects?{API}", None, 6),
        (READER, "GET", f"/{PROJECT}/_apis/git/repositories?{API}", None, 4),
        (READER, "GET", f"/_hosts/vsrm/{PROJECT}/_apis/release/releases?{API}", None, 2),
        (READER, "POST", f"/{PROJECT}/_apis/build/builds?{API}", {"definition": {"id": 1}}, 1),
        (BOT, "POST", f"/{PROJECT}/_apis/build/builds?{API}", {"definition": {"id": 1}}, 2),
        (BOT, "GET", f"/{PROJECT}/_apis/build/builds?{API}", None, 3),
        ("nightly-sync", "GET", f"/{PROJECT}/_apis/git/repositories?{API}", None, 6),
        (None, "GET", f"/fabrikam/_apis/projects?{API}", None, 1),
    ]
    weights = [c[4] for c in calls]
    start = time.monotonic()
    stop = start + seconds
    rng = random.Random(7)  # noqa: S311 - a reproducible request mix, not a secret

    async def worker(s: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop:
            who, method, path, body, _ = rng.choices(calls, weights)[0]
            headers = auth.get(who, {}) if who else {}
            async with s.request(method, gw + path, headers=headers, json=body) as r:
                await r.read()
            # a load that ramps up and down over the run
            phase = (time.monotonic() - start) / seconds
            await asyncio.sleep(0.02 + 0.06 * abs(0.5 - phase))

    async def scraper(s: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop + 2:
            async with s.get(demo.admin_url + "/metrics") as r:
                scrapes.append((time.monotonic() - start, parse(await r.text())))
            await asyncio.sleep(2)

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(scraper(s), *(worker(s) for _ in range(6)))


def add_rate_limited_client(demo: Any) -> None:
    policy = demo.config_path.parent / "policies" / "demo.yaml"
    doc = yaml.safe_load(policy.read_text())
    key = new_key()
    doc["clients"].append(
        {
            "name": "nightly-sync",
            "description": "a sync job with a rate limit",
            "api_keys": [{"id": "nightly-demo", "sha256": key_sha256(key)}],
            "credential": "reader-sp",
            "scopes": ["vso.code"],
            "rate_limit": {"per_minute": 300, "burst": 10},
        }
    )
    policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    demo.keys["nightly-sync"] = key


async def run(seconds: float, out: Path) -> None:
    demo = await start_demo(port=0, admin_port=0)
    scrapes: list[tuple[float, Sample]] = []
    try:
        reloader = Reloader(demo.gateway, demo.config_path)
        policy = demo.config_path.parent / "policies" / "demo.yaml"
        good = policy.read_text()
        policy.write_text(good + "\n  - name: [broken\n")
        assert not await reloader.reload("snapshot: a bad edit")
        policy.write_text(good)
        add_rate_limited_client(demo)
        assert await reloader.reload("snapshot: add nightly-sync")
        await drive(demo, seconds, scrapes)
        await reloader.close()
    finally:
        await demo.close()
    draw(scrapes, out, seconds)


def draw(scrapes: list[tuple[float, Sample]], out: Path, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [ts for ts, _ in scrapes][1:]

    def rates(name: str, by: str, **match: str) -> dict[str, list[float]]:
        series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(t))
        for i in range(1, len(scrapes)):
            (t0, a), (t1, b) = scrapes[i - 1], scrapes[i]
            before, after = total(a, name, by, **match), total(b, name, by, **match)
            for k in after:
                series[k][i - 1] = max(0.0, after[k] - before.get(k, 0.0)) / (t1 - t0)
        return dict(series)

    def gauges(name: str, by: str) -> dict[str, list[float]]:
        series: dict[str, list[float]] = defaultdict(lambda: [float("nan")] * len(t))
        for i in range(1, len(scrapes)):
            for k, v in total(scrapes[i][1], name, by).items():
                series[k][i - 1] = v
        return dict(series)

    def latency(q: float, metric: str = "request", **match: str) -> list[float]:
        name = f"azdo_gateway_{metric}_duration_seconds_bucket"
        out_: list[float] = []
        for i in range(1, len(scrapes)):
            a, b = scrapes[max(0, i - 3)][1], scrapes[i][1]  # over the last ~6 s
            ba, bb = total(a, name, "le", **match), total(b, name, "le", **match)
            inc = {float(le): bb[le] - ba.get(le, 0.0) for le in bb}
            v = quantile(q, inc)
            out_.append(v * 1000 if v is not None else float("nan"))
        return out_

    areas = sorted(
        {
            dict(k[1]).get("operation_area", "")
            for k in scrapes[-1][1]
            if k[0] == "azdo_gateway_upstream_duration_seconds_bucket"
        }
    )

    fig, axes = plt.subplots(3, 3, figsize=(16, 10.5))
    fig.patch.set_facecolor("#111217")
    panels = [
        ("Requests / s by client", rates("azdo_gateway_requests_total", "client"), "req/s"),
        ("Responses / s by status", rates("azdo_gateway_requests_total", "status"), "req/s"),
        (
            "Requests / s by operation area",
            rates("azdo_gateway_requests_total", "operation_area"),
            "req/s",
        ),
        (
            "Request duration (gateway)",
            {f"p{int(q * 100)}": latency(q) for q in (0.5, 0.95, 0.99)},
            "ms",
        ),
        (
            "Upstream duration p95 by area",
            {a: latency(0.95, "upstream", operation_area=a) for a in areas},
            "ms",
        ),
        ("Denied / s by reason", rates("azdo_gateway_denied_total", "reason"), "req/s"),
        ("Token expiry", gauges("azdo_gateway_token_expiry_seconds", "credential"), "s"),
        (
            "Token acquisitions (cumulative)",
            gauges("azdo_gateway_token_acquisitions_total", "result"),
            "",
        ),
        ("Config reloads (cumulative)", gauges("azdo_gateway_config_reloads_total", "result"), ""),
    ]
    for ax, (title, series, unit) in zip(axes.flat, panels, strict=True):
        ax.set_facecolor("#181b1f")
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=8)
        ax.set_title(title, color="#d8d9da", fontsize=10, loc="left")
        ax.set_ylabel(unit, color="#9fa7b3", fontsize=8)
        ax.grid(color="#2c3235", linewidth=0.5)
        for label, ys in sorted(series.items()):
            ax.plot(t, ys, linewidth=1.4, label=label or "all")
        if series:
            ax.legend(
                fontsize=7,
                facecolor="#181b1f",
                edgecolor="#2c3235",
                labelcolor="#d8d9da",
                loc="upper left",
            )
        ax.set_xlabel("seconds into the run", color="#9fa7b3", fontsize=8)
    fig.suptitle(
        "azdo-gateway: panels of deploy/grafana/azdo-gateway.json, drawn with matplotlib from "
        f"/metrics scraped every 2 s during a {seconds:.0f} s local run against the demo "
        "stand-ins (not a Grafana screenshot)",
        color="#d8d9da",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())
    print(f"wrote {out} from {len(scrapes)} scrapes")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--out", type=Path, default=Path("docs/images/dashboard.png"))
    args = p.parse_args()
    asyncio.run(run(args.seconds, args.out))


if __name__ == "__main__":
    main()
