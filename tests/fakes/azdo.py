"""A fake Azure DevOps for tests: echoes and records every request it receives."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_sha256: str
    body_len: int


@dataclass
class FakeAzdo:
    url: str
    runner: web.AppRunner
    seen: list[Seen] = field(default_factory=list)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_fake_azdo(**_: Any) -> FakeAzdo:
    fake: FakeAzdo

    async def echo(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        seen = Seen(request.method, request.raw_path.partition("?")[0], request.query_string,
                    dict(request.headers), h.hexdigest(), n)
        fake.seen.append(seen)
        return web.json_response({"method": seen.method, "path": seen.path,
                                  "authorization": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake = FakeAzdo(url=f"http://127.0.0.1:{port}", runner=runner)
    return fake
