"""A raw TCP server on 127.0.0.1 (port 0) for fakes that speak bytes, not aiohttp.

Subclasses implement `_accept(reader, writer)` and wrap its work in `self._tracked()`,
so that `close()` cancels and awaits every connection still being served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self


@dataclass
class LoopbackServer:
    _server: asyncio.Server | None = field(default=None, kw_only=True)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, kw_only=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """The connection being served now is cancelled by `close()`."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)
