"""Wiring: builds a Runtime from a Config and the aiohttp apps around it.

The request pipeline of DESIGN.md, listed once in `PIPELINE` and run in that
order by `Gateway.handle`, the one handler of the proxy's low-level aiohttp
server (no router, middlewares or signals: every request takes the same way):

    request id -> observe (metrics + audit) -> render errors -> shed
    -> canonicalize -> authenticate -> limit -> match -> select -> resolve
    -> authorize -> forward (inject token, stream, rewrite)

A reload builds a whole new Runtime and swaps one reference (`Gateway.runtime`);
requests in flight keep the Runtime they started with.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway import body_select
from gateway.authn import Authentication
from gateway.canonical import canonicalize, check_headers, effective_method
from gateway.catalog import Catalog
from gateway.clientaddr import IPNetwork, client_address, parse_networks
from gateway.config.model import Client, Config
from gateway.errors import Denied, GatewayError
from gateway.limits import Limiter
from gateway.listener import ProxyServer
from gateway.observability import Observability
from gateway.observability.logs import REQUEST_ID
from gateway.policy import Policy
from gateway.projects import MAX_ANSWER_BYTES, ProjectNames, lookup_path, parse_project
from gateway.proxy import Forwarder, Forwarding
from gateway.shared_limits import SharedLimits
from gateway.state import RedisStore, StateUnavailable, open_store
from gateway.tokens import TokenBroker
from gateway.types import RequestContext

log = logging.getLogger("azdo_gateway")

CTX = web.RequestKey("ctx", RequestContext)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# The stages every proxied request passes, in order (see `Gateway.handle`).
PIPELINE = (
    "request_id",  # take or make X-Request-ID; pin the current Runtime; the source address
    "observe",  # metrics and the audit line, whatever the outcome
    "render_errors",  # a GatewayError becomes its JSON (or git text) answer
    "shed",  # 503 when the process has limits.max_inflight requests
    "canonicalize",  # raw target -> upstream host, canonical path and query
    "authenticate",  # key, Entra token or client certificate -> ClientIdentity
    "limit",  # the client's rate limits; learns from upstream's throttling headers
    "match",  # the catalog's operation for host, method and path
    "select",  # ... or the one its body selects (a Git LFS upload batch; gateway.body_select)
    "resolve",  # a project named by id gets its name (gateway.projects), for the policy
    "authorize",  # the client's policy
    "forward",  # upstream token, stream both ways (credentials dropped), rewrite URLs
)


def new_request_id() -> str:
    """A random (version 4) UUID as text, as str(uuid.uuid4()) gives, built directly.

    From `random` (no system call per request; reseeded in every forked worker):
    a request id must be unique, not unguessable.
    """
    n = (
        (random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48))
        | (0x4000 << 64)
        | (0x8000 << 48)
    )
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything built from one configuration."""

    config: Config
    catalog: Catalog
    policy: Policy
    authn: Authentication
    tokens: TokenBroker
    forwarding: Forwarding  # origins, body limits, rewriter
    trusted_proxies: tuple[IPNetwork, ...] = ()  # listen.trusted_proxies, parsed


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
        forwarding=Forwarding.from_config(config),
        trusted_proxies=parse_networks(config.gateway.listen.trusted_proxies),
    )


class Gateway:
    """The running gateway: the current Runtime plus process-wide resources."""

    def __init__(self, runtime: Runtime, observability: Observability | None = None) -> None:
        self.runtime = runtime
        self.observability = observability or Observability(runtime.config)
        self.forwarder = Forwarder(runtime.config, self.observability)
        self.limits = Limiter()
        self.projects = ProjectNames()
        # The shared state backend (None: memory), for the process's whole life: a
        # reload that changes `state` takes effect on restart.
        self.state: RedisStore | None = open_store(
            runtime.config.gateway.state, self.observability.metrics
        )
        if self.state is not None:
            read_timeout = runtime.config.gateway.upstream.read_timeout_s
            self.limits.shared = SharedLimits(
                self.state, self.limits, lease_s=max(600.0, 2 * read_timeout)
            )
        self._users: dict[int, int] = {}  # id(Runtime) -> requests pinned to it
        self._idle: dict[int, asyncio.Event] = {}

    async def start(self) -> None:
        await self.forwarder.start()
        self.runtime.tokens.metrics = self.observability.metrics
        if self.state is not None:
            try:
                log.info("state backend redis: %s", await self.state.probe())
            except StateUnavailable as err:
                log.warning(
                    "state backend redis unavailable at start (%s): serving with this "
                    "process's own state until it answers",
                    err.detail,
                )
        self.runtime.authn.share(self.state)
        self.runtime.tokens.share(self.state)
        await self.runtime.tokens.start()

    async def close(self) -> None:
        await self.runtime.tokens.close()
        await self.runtime.authn.close()
        await self.forwarder.close()
        if self.state is not None:
            await self.state.close()
        self.observability.close()

    def state_status(self) -> dict[str, object]:
        """What /readyz reports about the state backend."""
        if self.state is None:
            return {"backend": "memory", "ok": True, "detail": "this process only"}
        return self.state.status()

    def swap(self, runtime: Runtime) -> Runtime:
        """Install a new Runtime; return the old one (the caller closes it later)."""
        old, self.runtime = self.runtime, runtime
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

    # --- the pipeline ----------------------------------------------------
    #
    # One handler runs every stage, in the order `PIPELINE` lists. The stages
    # that wrap the rest (request id, observe, render errors, shed, limit) are
    # the try blocks below; the others are plain calls.

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # request id: pin the Runtime this request uses from start to end
        given = request.headers.get("X-Request-ID", "")
        rid = given if _REQUEST_ID.match(given) else new_request_id()
        rt = request[RUNTIME] = self.runtime
        headers = request.headers
        ctx = request[CTX] = RequestContext(
            request_id=rid,
            method=request.method.upper(),
            source=client_address(request.remote, headers, rt.trusted_proxies),
            user_agent=headers.get("User-Agent"),
        )
        key = id(rt)
        users = self._users
        users[key] = users.get(key, 0) + 1
        observability = self.observability
        logged = REQUEST_ID.set(rid)  # log lines of this request carry its id
        try:
            # observe: metrics and the audit line
            observability.started(ctx)
            try:
                # render errors: a GatewayError from any later stage becomes its answer
                try:
                    response = await self._admitted(request, ctx, rt)
                except GatewayError as err:
                    response = self._error_response(request, ctx, err)
                if not response.prepared:  # a streamed answer got it from the forwarder
                    response.headers["X-Request-ID"] = rid
                ctx.status = response.status
                ctx.bytes_out = ctx.bytes_out or response.body_length
                return response
            except BaseException:
                ctx.status = ctx.status or 499  # client went away mid-request
                raise
            finally:
                ctx.bytes_in = ctx.bytes_in or request.content.total_bytes
                observability.finished(ctx)
        finally:
            REQUEST_ID.reset(logged)
            left = users.pop(key) - 1
            if left:
                users[key] = left
            elif key in self._idle:
                self._idle[key].set()

    @staticmethod
    def _error_response(
        request: web.BaseRequest, ctx: RequestContext, err: GatewayError
    ) -> web.Response:
        ctx.error_reason = err.reason
        as_text = request.headers.get("User-Agent", "").startswith("git/")
        return web.Response(
            status=err.status,
            body=err.to_text(ctx.request_id) if as_text else err.to_json(ctx.request_id),
            content_type="text/plain" if as_text else "application/json",
            headers=err.headers,
        )

    async def _admitted(
        self, request: web.BaseRequest, ctx: RequestContext, rt: Runtime
    ) -> web.StreamResponse:
        limits = self.limits
        # shed: refuse early when the process is full
        limits.enter(rt.config.gateway.limits.max_inflight)
        try:
            self.canonicalize(request, ctx, rt)
            # authenticate: the credential headers stay on the request, and the
            # forwarder's header cleaning (gateway.proxy.headers) is the one place
            # that keeps them from upstream.
            ctx.identity = identity = await rt.authn.authenticate(request, ctx)
            # limit: the client's rate limits around the rest
            client = rt.config.client(identity.client)
            if client is None:  # an authenticator named a client this policy lacks
                raise Denied(
                    f"no client {identity.client!r} in the policy", reason="unknown_client"
                )
            return await limits.guard(
                client,
                ctx,
                lambda: self._authorized(request, ctx, rt, client),
                self.observability.metrics,
            )
        finally:
            limits.leave()

    @staticmethod
    def canonicalize(request: web.BaseRequest, ctx: RequestContext, rt: Runtime) -> None:
        gw = rt.config.gateway
        target = canonicalize(
            request.raw_path, gw.upstream.hosts, max_length=gw.limits.max_url_length
        )
        ctx.host, ctx.path, ctx.query = target.host, target.path, target.query
        headers = request.headers.items()
        check_headers(headers)
        ctx.effective_method = effective_method(ctx.method, headers)

    @staticmethod
    def match(ctx: RequestContext, rt: Runtime) -> None:
        ctx.match = rt.catalog.match(ctx.host, ctx.effective_method, ctx.path, ctx.query)

    async def resolve(self, ctx: RequestContext, rt: Runtime, client: Client) -> None:
        """A project the request names by id gets its name (or a name its id), when the
        client's decision depends on it."""
        match = ctx.match
        if match is None or not rt.policy.project_lookup(client.name, match):
            return
        assert match.organization is not None and match.project is not None

        async def lookup(organization: str, project: str) -> tuple[str, str] | None:
            return await self._project_lookup(ctx, rt, client, organization, project)

        ctx.project = await self.projects.resolve(
            match.organization, match.project, lookup, credential=client.credential
        )

    async def _project_lookup(
        self, ctx: RequestContext, rt: Runtime, client: Client, organization: str, project: str
    ) -> tuple[str, str] | None:
        """GET /{organization}/_apis/projects/{project} upstream, with its own audit line."""
        path = lookup_path(organization, project)
        look = RequestContext(
            request_id=new_request_id(),
            method="GET",
            effective_method="GET",
            host="main",
            path=path,
            query="api-version=7.1",
            identity=ctx.identity,
        )
        look.match = rt.catalog.match("main", "GET", path)
        found: tuple[str, str] | None = None
        try:
            body = await self.forwarder.fetch(
                look, rt.forwarding, rt.tokens, client, max_bytes=MAX_ANSWER_BYTES
            )
            found = None if body is None else parse_project(body, project)
        except GatewayError as err:  # no upstream token for the client right now
            look.error_reason = err.reason
        self.observability.looked_up(look, ctx.request_id, found)
        return found

    @staticmethod
    def authorize(ctx: RequestContext, rt: Runtime) -> None:
        assert ctx.identity is not None
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

    async def _authorized(
        self, request: web.BaseRequest, ctx: RequestContext, rt: Runtime, client: Client
    ) -> web.StreamResponse:
        self.match(ctx, rt)
        await body_select.select(request, ctx, rt.catalog)
        await self.resolve(ctx, rt, client)
        self.authorize(ctx, rt)
        return await self.forwarder.forward(request, ctx, rt.forwarding, rt.tokens, client)

    def proxy_server(self, **options: Any) -> web.Server:
        """The proxy's low-level aiohttp server; `options` go to aiohttp's RequestHandler.
        A request aiohttp cannot parse is answered by `gateway.listener`."""
        return ProxyServer(self.handle, **options)
