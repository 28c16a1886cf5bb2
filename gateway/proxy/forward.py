"""Forward one authorized request upstream with the injected credential and
stream the response back."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.config.model import Client, Config
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.observability import Observability
from gateway.tokens import TokenBroker
from gateway.types import RequestContext

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
        "Host", "Authorization", "Cookie", "Content-Length",
    )
)


class Forwarder:
    def __init__(self, config: Config, observability: Observability) -> None:
        self.config = config
        self.observability = observability
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        up = self.config.gateway.upstream
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(sock_connect=up.connect_timeout_s, sock_read=up.read_timeout_s),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def forward(
        self, request: web.Request, ctx: RequestContext, tokens: TokenBroker, client: Client
    ) -> web.StreamResponse:
        assert self.session is not None and ctx.identity is not None
        token = await tokens.acquire(ctx.identity, client)
        ctx.credential = token.credential
        base = self.config.gateway.upstream.hosts[ctx.host]
        url = base + ctx.path + (("?" + ctx.query) if ctx.query else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Authorization"] = token.header_value
        data = request.content if request.body_exists else None
        try:
            async with self.session.request(
                request.method, aiohttp.client.URL(url, encoded=True), headers=headers,
                data=data, allow_redirects=False,
            ) as up:
                ctx.upstream_status = up.status
                response = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        response.headers.add(k, v)
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except TimeoutError:
            raise UpstreamTimeout("upstream did not answer in time") from None
        except aiohttp.ClientConnectionError as err:
            raise UpstreamError(f"upstream unreachable: {type(err).__name__}") from None
