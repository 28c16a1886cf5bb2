"""The default worker count: affinity mask and cgroup CPU quota, on fake cgroup trees."""

from __future__ import annotations

import os

import pytest

from gateway import cpus
from gateway.cpus import available_cpus, cpu_quota


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


def tree(tmp_path, proc: str, files: dict[str, str]):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc_file = tmp_path / "proc-self-cgroup"
    proc_file.write_text(proc)
    return root, proc_file


V2 = "0::/kubepods/pod1/ctr\n"
V1 = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"


@pytest.mark.parametrize(
    ("proc", "files", "quota", "workers"),
    [
        # cgroup v2: the process's own cpu.max
        (V2, {"kubepods/pod1/ctr/cpu.max": "200000 100000\n"}, 2.0, 2),
        # a fraction rounds down, never below one
        (V2, {"kubepods/pod1/ctr/cpu.max": "250000 100000\n"}, 2.5, 2),
        (V2, {"kubepods/pod1/ctr/cpu.max": "50000 100000\n"}, 0.5, 1),
        # no limit here, but an ancestor has one: the tightest wins
        (
            V2,
            {
                "kubepods/pod1/ctr/cpu.max": "max 100000\n",
                "kubepods/pod1/cpu.max": "300000 100000\n",
                "kubepods/cpu.max": "400000 100000\n",
            },
            3.0,
            3,
        ),
        # no limit anywhere: the affinity mask
        (V2, {"kubepods/pod1/ctr/cpu.max": "max 100000\n"}, None, 8),
        # a quota above the CPUs the process may run on: the affinity mask
        (V2, {"kubepods/pod1/ctr/cpu.max": "1600000 100000\n"}, 16.0, 8),
        # a private cgroup namespace: the path is "/", cpu.max at the mount root
        ("0::/\n", {"cpu.max": "100000 100000\n"}, 1.0, 1),
        # the path names a host cgroup not mounted here: the mount root is it
        (V2, {"cpu.max": "300000 100000\n"}, 3.0, 3),
        # garbage and missing files: no quota
        (V2, {"kubepods/pod1/ctr/cpu.max": "lots\n"}, None, 8),
        (V2, {"kubepods/pod1/ctr/cpu.max": "-5 100000\n"}, None, 8),
        (V2, {}, None, 8),
        # cgroup v1: cfs quota and period in the cpu controller's hierarchy
        (
            V1,
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            1.5,
            1,
        ),
        (
            V1,
            {
                "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "-1\n",
                "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            },
            None,
            8,
        ),
        # v1 mounted as plain "cpu", the container's own cgroup at the mount root
        (
            V1,
            {"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"},
            4.0,
            4,
        ),
        (V1, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "x\n"}, None, 8),
        # no cgroup information at all
        ("", {}, None, 8),
    ],
)
def test_quota_and_worker_count(tmp_path, eight_cpus, proc, files, quota, workers):
    root, proc_file = tree(tmp_path, proc, files)
    assert cpu_quota(root, proc_file) == quota
    assert available_cpus(root, proc_file) == workers


def test_affinity_mask_limits_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    root, proc_file = tree(tmp_path, V2, {"kubepods/pod1/ctr/cpu.max": "max 100000\n"})
    assert available_cpus(root, proc_file) == 2


def test_unreadable_proc_file_means_no_quota(tmp_path, eight_cpus):
    assert cpu_quota(tmp_path, tmp_path / "missing") is None
    assert available_cpus(tmp_path, tmp_path / "missing") == 8


def test_the_supervisor_default_is_this_count(monkeypatch):
    from gateway import supervisor

    monkeypatch.setattr(supervisor, "available_cpus", lambda: 3)
    assert supervisor.default_workers() == 3
    assert cpus.CGROUP_ROOT.as_posix() == "/sys/fs/cgroup"
