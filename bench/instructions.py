"""Instructions per small request: the gateway against the bare forwarder, counted.

    python bench/instructions.py [--requests N] [--against REV] [--json FILE]

Runs the upstream, the bare forwarder and `azdo-gateway run --workers 1` of
`proxy_bench.py`, each proxy under valgrind's callgrind with instrumentation
off until its warm-up is done, then sends N small requests (the project list,
16 at a time, from an aiohttp client in this process) through each and reads
the instructions the proxy executed for them. With `--against REV` the gateway
at git revision REV (a temporary worktree) is counted the same way.

Unlike requests/s or CPU seconds, an instruction count does not depend on what
else the machine is doing: with the proxies' string hashing fixed
(`PYTHONHASHSEED=0`), two runs of the same code agree within 0.5%, so a
change of a few percent in what the gateway executes per request shows up
here when the load benchmarks cannot tell it from noise. It does not see
cache misses, so it is a measure of the work done, not of its time;
`proxy_bench.py` measures the time. Needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb  # noqa: E402

CALLGRIND = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no"]
WARM_UP = 200


async def load(url: str, auth: str, n: int) -> None:
    """n small requests, 16 at a time; every answer must be a 200."""
    async with aiohttp.ClientSession() as session:
        slots = asyncio.Semaphore(16)

        async def one() -> None:
            async with slots, session.get(url, headers={"Authorization": auth}) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"{url}: HTTP {r.status}")

        await asyncio.gather(*(one() for _ in range(n)))


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def count(proc: asyncio.subprocess.Process, url: str, auth: str, n: int, out: Path) -> float:
    """Instructions per request of `proc` (under callgrind) for n requests to `url`."""
    await load(url + pb.SMALL, auth, WARM_UP)
    _callgrind(proc.pid, "--instr=on")
    await load(url + pb.SMALL, auth, n)
    _callgrind(proc.pid, "--instr=off")
    _callgrind(proc.pid, "--dump")
    totals = [
        int(line.split()[1])
        for dump in out.parent.glob(out.name + "*")
        for line in dump.read_text().splitlines()
        if line.startswith("totals:")
    ]
    return sum(totals) / n


def callgrind(out: Path) -> list[str]:
    """The command that runs a program under callgrind, its counts written to `out`."""
    return [*CALLGRIND, f"--callgrind-out-file={out}"]


async def bench(args: argparse.Namespace) -> dict[str, float]:
    with pb.worktree(args.against) as code:
        return await _bench(args, code)


async def _bench(args: argparse.Namespace, code: Path | None) -> dict[str, float]:
    # The same string hashes in every run (so the same dict and set probing):
    # the counts repeat within 0.5% instead of about 3%.
    os.environ["PYTHONHASHSEED"] = "0"
    procs: list[asyncio.subprocess.Process] = []
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            up, upstream = await pb.spawn_role("upstream")
            procs.append(up)
            out = Path(tmp) / "forwarder.cg"
            fwd, forwarder = await pb.spawn_role("forwarder", upstream, under=callgrind(out))
            procs.append(fwd)
            results["forwarder"] = await count(fwd, forwarder, "", args.requests, out)
            gateways = [("gateway", None)] + ([("against", code)] if code is not None else [])
            for name, source in gateways:
                folder = Path(tmp) / name
                folder.mkdir()
                out = folder / "gateway.cg"
                gw, url, auth = await pb.spawn_gateway(
                    folder, upstream, source, under=callgrind(out)
                )
                procs.append(gw)
                results[name] = await count(gw, url, auth, args.requests, out)
            return results
        finally:
            await pb.stop(procs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000, help="requests counted (1000)")
    p.add_argument("--against", help="also count the gateway at this git revision")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    r = asyncio.run(bench(args))
    print(f"instructions per small request ({args.requests} requests, 16 at a time)")
    print(f"  forwarder  {r['forwarder']:10,.0f}")
    fw, gw = r["forwarder"], r["gateway"]
    print(f"  gateway    {gw:10,.0f}   forwarder/gateway {fw / gw:.2f}")
    if "against" in r:
        print(
            f"  at {args.against:<8}{r['against']:10,.0f}   forwarder/gateway"
            f" {r['forwarder'] / r['against']:.2f}   now/then {r['gateway'] / r['against']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
