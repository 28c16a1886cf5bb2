"""Child processes in tests: every one is waited for, on every path.

A process a test started but did not wait for (its timeout hit, the test failed or was
cancelled) outlives the test's event loop; its transport is then collected, unclosed,
during some later test, which fails on the ResourceWarning."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

REAP_S = 30.0


async def reap(proc: asyncio.subprocess.Process) -> int:
    """Kill `proc` unless it is known to have exited, and wait for it and its pipes.
    (`os.kill`, unlike `Process.kill()`, never reaps it behind the child watcher.)"""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    return await asyncio.wait_for(proc.wait(), REAP_S)


async def communicate(proc: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """`proc.communicate()` within `timeout`; past it (or on any failure) the process is
    killed and waited for before the error propagates."""
    try:
        return await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        await reap(proc)
        raise


async def wait(proc: asyncio.subprocess.Process, timeout: float) -> int:
    """`proc.wait()` within `timeout`; past it the process is killed and waited for, and
    TimeoutError raised."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except BaseException:
        await reap(proc)
        raise


ROOT = Path(__file__).resolve().parents[1]


async def start_gateway(
    command: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """`azdo-gateway COMMAND ARGS` (python -m gateway), its output on pipes."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        command,
        *args,
        env=env,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
    )


async def start_demo(
    *args: str, env: dict[str, str], cwd: Path, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`azdo-gateway demo ARGS` on free ports, with its output on pipes."""
    return await start_gateway(
        "demo", *args, "--port", "0", "--admin-port", "0", env=env, cwd=cwd, stderr=stderr
    )


class Supervised:
    """The supervisor process and what it (and its workers) logged."""

    wait_s = 30.0  # how long wait_for waits by default

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._new:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._new.notify_all()
        async with self._new:
            self.lines.append("<eof>")
            self._new.notify_all()

    async def wait_for(
        self, pattern: str, count: int = 1, timeout: float | None = None
    ) -> list[str]:
        rx = re.compile(pattern)

        def found() -> list[str]:
            return [line for line in self.lines if rx.search(line)]

        async with asyncio.timeout(self.wait_s if timeout is None else timeout), self._new:
            await self._new.wait_for(lambda: len(found()) >= count or "<eof>" in self.lines)
        hits = found()
        assert len(hits) >= count, "\n".join(self.lines)
        return hits

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM, waited for (killed and reaped past `timeout`); its exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = await wait(self.proc, timeout)
        finally:
            await reap(self.proc)
            await self._reader
        return code
