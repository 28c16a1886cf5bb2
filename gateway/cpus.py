"""How many CPUs this process may really use: the default of `run --workers`.

Takes the CPU affinity mask (`os.sched_getaffinity`, what `taskset` or a
cpuset gives) and the CPU quota of the process's control group, which is how
a container runtime or Kubernetes enforces `--cpus` / `resources.limits.cpu`:

- cgroup v2: `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for no limit) in the
  process's cgroup and in every ancestor up to the mount root (the tightest
  one wins);
- cgroup v1: `cpu.cfs_quota_us` (-1: no limit) and `cpu.cfs_period_us` in the
  `cpu` controller's hierarchy.

Returns the smaller of the two, a quota rounded down (2.5 CPUs give 2 worker
processes: a worker that the kernel throttles for part of every period stalls
every request it holds), and never less than 1. Files that are missing or
unreadable or say something unexpected mean "no quota" (the host's CPUs).
`root` and `proc_cgroup` exist for tests, which point them at fake trees.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The number of CPUs this process may use (at least 1)."""
    cpus = _affinity()
    quota = cpu_quota(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota in CPUs (1.5 = one and a half), or None when there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    v2: str | None = None
    v1: str | None = None
    v1_dir = "cpu"
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
            v1_dir = controllers
    if v1 is not None:
        for mount in (v1_dir, "cpu,cpuacct", "cpu"):
            quota = _v1_quota(root / mount, v1)
            if quota is not None:
                return quota
        return None
    if v2 is not None:
        return _v2_quota(root, v2)
    return None


def _candidates(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and its ancestors up to the mount root.

    Inside a container whose cgroup namespace is not private, /proc/self/cgroup
    names a path (/kubepods/...) that does not exist under the container's own
    mount, which is then its cgroup: the mount root is always a candidate."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    dirs = [mount.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]
    return [d for d in dirs if d.is_dir()] + [mount]


def _v2_quota(root: Path, path: str) -> float | None:
    tightest: float | None = None
    for directory in _candidates(root, path):
        try:
            fields = (directory / "cpu.max").read_text().split()
        except OSError:
            continue
        if len(fields) != 2 or fields[0] == "max":
            continue
        try:
            quota, period = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        if quota > 0 and period > 0:
            cpus = quota / period
            tightest = cpus if tightest is None else min(tightest, cpus)
    return tightest


def _v1_quota(mount: Path, path: str) -> float | None:
    for directory in _candidates(mount, path):
        try:
            quota = int((directory / "cpu.cfs_quota_us").read_text())
            period = int((directory / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
        return None  # the nearest readable level says: no limit
    return None
