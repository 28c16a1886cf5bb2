"""Real `azdo-gateway run` processes for fleet tests: several on one config.

    proc = await GatewayProcess.start(config_path, workers=2)
    proc.url, proc.admin          # the proxy and admin URLs it serves on
    await proc.stop()             # SIGTERM, waited for; its exit code

Output (stderr, where it logs) is collected in `lines`; `wait_for(pattern)` waits
for a line, and fails with everything logged if the process ends first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

from tests.processes import ROOT, reap, start_gateway, wait

_URLS = re.compile(r"https?://[\d.]+:\d+")


class GatewayProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.url = ""
        self.admin = ""
        self._new = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(
        cls, config: Path, *, workers: int = 1, env: dict[str, str] | None = None
    ) -> GatewayProcess:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AZDO_GATEWAY")}
        environ.update(PYTHONPATH=str(ROOT), **(env or {}))
        proc = await start_gateway(
            "run", "-c", str(config), "--workers", str(workers), env=environ, stdout=None
        )
        self = cls(proc)
        try:
            if workers > 1:
                (banner,) = await self.wait_for(r"supervisor: \d+ workers on")
                await self.wait_for(r"serving on", workers)
            else:
                (banner,) = await self.wait_for(r"serving on")
            self.url, self.admin = _URLS.findall(banner)[:2]
        except BaseException:
            await self.stop()
            raise
        return self

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._new:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._new.notify_all()
        async with self._new:
            self.lines.append("<eof>")
            self._new.notify_all()

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> list[str]:
        rx = re.compile(pattern)

        def found() -> list[str]:
            return [line for line in self.lines if rx.search(line)]

        async with asyncio.timeout(timeout), self._new:
            await self._new.wait_for(lambda: len(found()) >= count or "<eof>" in self.lines)
        hits = found()
        assert len(hits) >= count, "\n".join(self.lines)
        return hits

    async def stop(self, timeout: float = 30) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            code = await wait(self.proc, timeout)
        finally:
            await reap(self.proc)
            await self._reader
        return code
