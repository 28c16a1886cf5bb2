"""Instructions per small request: the gateway against the bare forwarder, counted.

    python bench/instructions.py [--requests N] [--against REV] [--floor] [--no-audit]
                                 [--json FILE]

Runs the upstream, the bare forwarder and `azdo-gateway run --workers 1` of
`proxy_bench.py`, each proxy under valgrind's callgrind with instrumentation
off until its warm-up is done, then sends N small requests (the project list,
16 at a time, from an aiohttp client in this process) through each and reads
the instructions the proxy executed for them. With `--against REV` the gateway
at git revision REV (a temporary worktree) is counted the same way. With
`--floor`, so is the gateway's process with its pipeline replaced (`floor.py`):
by the bare forward alone, and by as many stages as `PIPELINE` has that only
hand the call on; what the gateway costs above the second is its stages' own
work, and the line after says how much of it fits in the 0.85 target. With
`--no-audit`, so is the gateway with its audit trail switched off
(`audit.file: null`).

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

from gateway.pipeline import PIPELINE  # noqa: E402

FLOOR = Path(__file__).resolve().parent / "floor.py"
CALLGRIND = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no"]
WARM_UP = 200
TARGET = 0.85  # the throughput the gateway must keep of the bare forwarder's


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
            gateway = ("-m", "gateway")
            gateways: list[tuple[str, Path | None, tuple[str, str], bool]] = [
                ("gateway", None, gateway, True)
            ]
            if code is not None:
                gateways.append(("against", code, gateway, True))
            if args.no_audit:
                gateways.append(("no_audit", None, gateway, False))
            if args.floor:
                floors = ("bare", "stages")
                gateways += [(f"floor_{v}", None, (str(FLOOR), v), True) for v in floors]
            for name, source, entry, audit in gateways:
                folder = Path(tmp) / name
                folder.mkdir()
                out = folder / "gateway.cg"
                gw, url, auth = await pb.spawn_gateway(
                    folder, upstream, source, under=callgrind(out), entry=entry, audit=audit
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
    p.add_argument(
        "--floor",
        action="store_true",
        help="also count the gateway's process with its pipeline replaced (floor.py)",
    )
    p.add_argument(
        "--no-audit",
        action="store_true",
        help="also count the gateway with its audit trail off (audit.file: null)",
    )
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    r = asyncio.run(bench(args))
    print(f"instructions per small request ({args.requests} requests, 16 at a time)")
    fw, gw = r["forwarder"], r["gateway"]
    rows = [("forwarder", fw, ""), ("gateway", gw, f"forwarder/gateway {fw / gw:.2f}")]
    if "against" in r:
        then = r["against"]
        rows.append(
            (
                f"at {args.against}",
                then,
                f"forwarder/gateway {fw / then:.2f}   now/then {gw / then:.2f}",
            )
        )
    if args.no_audit:
        quiet = r["no_audit"]
        rows.append(("gateway, audit trail off", quiet, f"forwarder/that {fw / quiet:.2f}"))
    if args.floor:
        bare, stages = r["floor_bare"], r["floor_stages"]
        rows.append(("its process, a bare forward", bare, f"forwarder/that {fw / bare:.2f}"))
        rows.append(
            (
                f"{len(PIPELINE)} stages handing on, a bare forward",
                stages,
                f"forwarder/that {fw / stages:.2f}",
            )
        )
    for label, n, note in rows:
        print(f"  {label:<40} {n:10,.0f}   {note}".rstrip())
    if args.floor:
        print(
            f"  the stages' own work: {gw - r['floor_stages']:,.0f};"
            f" within {TARGET:.2f} they may do {max(0.0, fw / TARGET - r['floor_stages']):,.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
