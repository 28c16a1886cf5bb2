"""Real `azdo-gateway run` processes for fleet tests: several on one config.

    proc = await GatewayProcess.start(config_path, workers=2)
    proc.url, proc.admin          # the proxy and admin URLs it serves on
    await proc.stop()             # SIGTERM, waited for; its exit code

Output (stderr, where it logs) is collected in `lines`; `wait_for(pattern)` waits
for a line, and fails with everything logged if the process ends first.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from tests.processes import ROOT, Supervised, start_gateway

_URLS = re.compile(r"https?://[\d.]+:\d+")


class GatewayProcess(Supervised):
    """Supervised, plus the proxy and admin URLs the process serves on."""

    wait_s = 60.0

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__(proc)
        self.url = ""
        self.admin = ""

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
