"""`azdo-gateway demo --check` on a machine without git (the container image has none):
the examples it prints are the ones its stand-in can answer, and all of them pass."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.processes import communicate, start_demo

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_check_passes_without_git(tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = {
        "PATH": str(empty_path),  # no git (and nothing else) on PATH
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "LC_ALL": "C",
    }
    proc = await start_demo("--check", env=env, cwd=tmp_path, stderr=asyncio.subprocess.STDOUT)
    out_bytes, _ = await communicate(proc, 60)
    out = out_bytes.decode(errors="replace")
    assert proc.returncode == 0, out
    assert out.rstrip().endswith("demo check: ok")
    assert "note: git is not installed" in out
    # what needs the stand-in's repositories is not offered
    assert "queues that build" not in out
    assert "/_hosts/vsrm/" not in out
    assert "git clone" not in out
    # what does not is still there
    assert "Allowed: the read-only key lists projects" in out
    assert "may not queue a build" in out
    assert "Traceback" not in out
