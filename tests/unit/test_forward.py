"""gateway.proxy.forward: buffering an answer the rewriter wants, up to its cap."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.config.model import Upstream
from gateway.proxy.forward import Forwarder
from gateway.proxy.upstream import open_session


async def test_an_answer_is_buffered_up_to_the_cap_whole_or_in_pieces(
    aiohttp_server: Any,
) -> None:
    release = asyncio.Event()

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length
        await response.prepare(request)
        await response.write(b"x" * 100)
        if request.query.get("held"):
            await release.wait()
            await response.write(b"y" * 100)
        return response

    app = web.Application()
    app.router.add_get("/", chunked)
    server = await aiohttp_server(app)
    session = open_session(Upstream())
    try:
        for cap, expected in ((100, (b"x" * 100, [])), (99, (None, [b"x" * 100]))):
            async with session.get(server.make_url("/")) as up:
                await up.content.wait_eof()  # arrived whole
                assert await Forwarder._buffer(up, cap) == expected
        async with session.get(server.make_url("/?held=1")) as up:
            buffering = asyncio.ensure_future(Forwarder._buffer(up, 150))
            await asyncio.sleep(0.05)  # the first piece is in, the rest still to come
            release.set()
            body, prefix = await buffering
            assert body is None and b"".join(prefix) == b"x" * 100 + b"y" * 100
    finally:
        await session.close()
