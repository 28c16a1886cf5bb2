"""Wiring: builds a Runtime from a Config and the aiohttp apps around it.

The middleware order is the request pipeline of DESIGN.md, listed once in
`pipeline()`:

    request id -> observe (metrics + audit) -> render errors -> canonicalize
    -> authenticate -> match -> authorize -> forward (inject token, stream, rewrite)

A reload builds a whole new Runtime and swaps one reference (`Gateway.runtime`);
requests in flight keep the Runtime they started with.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.authn import Authentication, strip_credentials
from gateway.canonical import canonicalize, check_headers, effective_method
from gateway.catalog import Catalog
from gateway.config.model import Config
from gateway.errors import Denied, GatewayError
from gateway.limits import Limiter
from gateway.observability import Observability
from gateway.policy import Policy
from gateway.proxy import Forwarder
from gateway.tokens import TokenBroker
from gateway.types import RequestContext

log = logging.getLogger("azdo_gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CTX = web.RequestKey("ctx", RequestContext)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything built from one configuration."""

    config: Config
    catalog: Catalog
    policy: Policy
    authn: Authentication
    tokens: TokenBroker


# The Runtime a request started with; every stage of that request uses it, so a
# reload never shows one request half of the old policy and half of the new.
RUNTIME = web.RequestKey("runtime", Runtime)


def build_runtime(config: Config, catalog: Catalog | None = None) -> Runtime:
    catalog = catalog or Catalog.builtin()
    return Runtime(
        config=config,
        catalog=catalog,
        policy=Policy(config, catalog),
        authn=Authentication(config),
        tokens=TokenBroker(config),
    )


async def _send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, streamed or not, carries the request id (set before headers go out)."""
    ctx = request.get(CTX)
    if ctx is not None:
        response.headers["X-Request-ID"] = ctx.request_id


class Gateway:
    """The running gateway: the current Runtime plus process-wide resources."""

    def __init__(self, runtime: Runtime, observability: Observability | None = None) -> None:
        self.runtime = runtime
        self.observability = observability or Observability(runtime.config)
        self.forwarder = Forwarder(runtime.config, self.observability)
        self.limits = Limiter()
        self._users: dict[int, int] = {}  # id(Runtime) -> requests pinned to it
        self._idle: dict[int, asyncio.Event] = {}

    async def start(self) -> None:
        await self.forwarder.start()
        self.runtime.tokens.metrics = self.observability.metrics
        await self.runtime.tokens.start()

    async def close(self) -> None:
        await self.runtime.tokens.close()
        await self.runtime.authn.close()
        await self.forwarder.close()
        self.observability.close()

    def swap(self, runtime: Runtime) -> Runtime:
        """Install a new Runtime; return the old one (the caller closes it later)."""
        old, self.runtime = self.runtime, runtime
        self.forwarder.configure(runtime.config)
        return old

    async def retire(self, old: Runtime, grace_s: float) -> bool:
        """Wait (up to `grace_s`) until no request uses `old`, then close it.
        True if it drained in time."""
        drained = True
        if id(old) in self._users:
            idle = self._idle.setdefault(id(old), asyncio.Event())
            try:
                async with asyncio.timeout(grace_s):
                    await idle.wait()
            except TimeoutError:
                drained = False
            self._idle.pop(id(old), None)
        await old.tokens.close()
        await old.authn.close()
        return drained

    # --- middleware, in pipeline order -----------------------------------

    @web.middleware
    async def request_id(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("X-Request-ID", "")
        rid = given if _REQUEST_ID.match(given) else str(uuid.uuid4())
        request[CTX] = RequestContext(request_id=rid, method=request.method.upper())
        rt = request[RUNTIME] = self.runtime
        key = id(rt)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._users.pop(key) - 1
            if left:
                self._users[key] = left
            elif key in self._idle:
                self._idle[key].set()

    @web.middleware
    async def observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = request[CTX]
        self.observability.started(ctx)
        try:
            response = await handler(request)
            ctx.status = response.status
            ctx.bytes_out = ctx.bytes_out or response.body_length
            return response
        except BaseException:
            ctx.status = ctx.status or 499  # client went away mid-request
            raise
        finally:
            ctx.bytes_in = ctx.bytes_in or request.content.total_bytes
            self.observability.finished(ctx)

    @web.middleware
    async def render_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = request[CTX]
        try:
            response = await handler(request)
        except GatewayError as err:
            ctx.error_reason = err.reason
            as_text = request.headers.get("User-Agent", "").startswith("git/")
            response = web.Response(
                status=err.status,
                body=err.to_text(ctx.request_id) if as_text else err.to_json(ctx.request_id),
                content_type="text/plain" if as_text else "application/json",
                headers=err.headers,
            )
        response.headers["X-Request-ID"] = ctx.request_id
        return response

    @web.middleware
    async def shed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.limits.enter(request[RUNTIME].config.gateway.limits.max_inflight)
        try:
            return await handler(request)
        finally:
            self.limits.leave()

    @web.middleware
    async def canonicalize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = request[CTX]
        gw = request[RUNTIME].config.gateway
        target = canonicalize(
            request.raw_path, gw.upstream.hosts, max_length=gw.limits.max_url_length
        )
        ctx.host, ctx.path, ctx.query = target.host, target.path, target.query
        check_headers(request.headers.items())
        ctx.effective_method = effective_method(ctx.method, request.headers.items())
        return await handler(request)

    @web.middleware
    async def authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = request[CTX]
        ctx.identity = await request[RUNTIME].authn.authenticate(request, ctx)
        return await handler(strip_credentials(request))

    @web.middleware
    async def limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = request[CTX]
        assert ctx.identity is not None
        client = request[RUNTIME].config.client(ctx.identity.client)
        if client is None:
            return await handler(request)
        return await self.limits.guard(
            client, ctx, lambda: handler(request), self.observability.metrics
        )

    @web.middleware
    async def authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        ctx = request[CTX]
        rt = request[RUNTIME]
        assert ctx.identity is not None
        ctx.match = rt.catalog.match(ctx.host, ctx.effective_method, ctx.path, ctx.query)
        decision = rt.policy.authorize(ctx.identity, ctx)
        ctx.decision = decision
        if not decision.allowed:
            op = ctx.match.operation.id if ctx.match else None
            raise Denied(
                decision.message or "request not allowed by policy",
                reason=decision.reason,
                required_scopes=decision.required_scopes,
                operation=op,
            )
        return await handler(request)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        ctx = request[CTX]
        assert ctx.identity is not None
        rt = request[RUNTIME]
        client = rt.config.client(ctx.identity.client)
        assert client is not None
        return await self.forwarder.forward(request, ctx, rt.tokens, client)

    def pipeline(self) -> list[Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]]:
        return [
            self.request_id,
            self.observe,
            self.render_errors,
            self.shed,
            self.canonicalize,
            self.authenticate,
            self.limit,
            self.authorize,
        ]

    def proxy_app(self) -> web.Application:
        app = web.Application(middlewares=self.pipeline(), client_max_size=0)
        app.on_response_prepare.append(_send_request_id)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app
