"""The real git client for tests: an isolated environment and a run that returns the exit
code and everything git printed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.processes import communicate


def git_env(home: Path, **extra: str) -> dict[str, str]:
    """No system or user configuration but what `home` holds, no prompts, a fixed author."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        "GIT_AUTHOR_NAME": "Ci",
        "GIT_AUTHOR_EMAIL": "ci@example.com",
        "GIT_COMMITTER_NAME": "Ci",
        "GIT_COMMITTER_EMAIL": "ci@example.com",
        **extra,
    }


async def git_call(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run git; return its exit code and its standard output and error, interleaved."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await communicate(proc, timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
