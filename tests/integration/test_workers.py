"""`azdo-gateway run --workers N`: real processes on one port, crash and restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.harness import new_key, pat_client_config, write_config
from tests.integration.ops_support import Upstream, metric, metric_values
from tests.processes import Supervised, start_gateway, wait

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


async def test_workers_share_a_port_survive_a_crash_and_stop_on_sigterm(tmp_path):
    upstream = await Upstream().start()
    key, digest = new_key()
    cfg = write_config(
        tmp_path,
        *pat_client_config(upstream.url, digest, scopes=["vso.project"], shutdown_grace_s=5),
    )
    metrics_dir = tmp_path / "metrics"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZDO_GATEWAY")}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=str(ROOT))
    proc = await start_gateway("run", "-c", str(cfg), "--workers", "2", env=env, stdout=None)
    sup = Supervised(proc)
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    try:
        (banner,) = await sup.wait_for(r"supervisor: 2 workers on")
        url, admin = re.findall(r"https?://[\d.]+:\d+", banner)
        await sup.wait_for(r"serving on", 2)
        started = [
            int(p)
            for line in await sup.wait_for(r"worker \d started", 2)
            for p in re.findall(r"pid (\d+)", line)
        ]

        async def burst(n: int) -> list[int]:
            statuses = []
            for _ in range(n):  # a new connection each time: the kernel picks a worker
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(url + "/fabrikam/_apis/projects", headers=auth) as r,
                ):
                    statuses.append(r.status)
            return statuses

        assert await burst(20) == [200] * 20

        async def total() -> float:
            async with aiohttp.ClientSession() as s, s.get(admin + "/metrics") as r:
                m = metric_values(await r.text())
            return metric(
                m,
                "azdo_gateway_requests_total",
                client="ci",
                operation_area="core",
                method="GET",
                status="200",
            )

        async def settles_at(n: float) -> None:
            """A worker counts a request just after its last byte went out, so a scrape
            racing the final response may miss it: look again until it shows."""
            async with asyncio.timeout(10):
                while (seen := await total()) != n:
                    assert seen < n
                    await asyncio.sleep(0.05)

        await settles_at(20)
        handled = {f.name for f in metrics_dir.glob("histogram_*.db")}
        assert handled == {f"histogram_{pid}.db" for pid in started}  # both workers served

        os.kill(started[0], signal.SIGKILL)
        await sup.wait_for(rf"pid {started[0]}\) exited with SIGKILL")
        await sup.wait_for(r"serving on", 3)
        assert len(await sup.wait_for(r"worker 1 started", 2)) == 2  # restarted in its slot
        assert await total() == 20  # the dead worker's counts are kept
        assert await burst(10) == [200] * 10
        await settles_at(30)

        # SIGHUP to the supervisor reaches every worker: each reloads (a new client here)
        policy = tmp_path / "policies" / "ci.yaml"
        doc = yaml.safe_load(policy.read_text())
        doc["clients"].append({"name": "late", "credential": "server", "scopes": ["vso.code"]})
        policy.write_text(yaml.safe_dump(doc))
        proc.send_signal(signal.SIGHUP)
        await sup.wait_for(r"configuration reloaded \(SIGHUP\): 2 clients", 2)
        assert await burst(2) == [200] * 2
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # no Process.send_signal(): see reap()
        try:
            code = await wait(proc, 20)
        finally:
            await sup._reader
            await upstream.close()
    assert code == 0, "\n".join(sup.lines)
    assert any("supervisor stopping" in line for line in sup.lines)
    for line in sup.lines:
        assert "Traceback" not in line, "\n".join(sup.lines)
    # every worker is gone
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
