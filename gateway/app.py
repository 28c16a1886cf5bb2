"""Wiring: builds a Runtime from a Config, and the Gateway that serves it.

The request pipeline of DESIGN.md is `gateway.pipeline.PIPELINE`, an ordered
list of stage functions that `Gateway.handle` runs for every request.

A reload builds a whole new Runtime and swaps one reference (`Gateway.runtime`);
requests in flight keep the Runtime they started with.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.authn import Authentication
from gateway.catalog import Catalog
from gateway.clientaddr import IPNetwork, parse_networks
from gateway.config.model import Config
from gateway.limits import Limiter
from gateway.listener import ProxyServer
from gateway.observability import Observability
from gateway.pipeline import PIPELINE, Call, chain
from gateway.policy import Policy
from gateway.projects import ProjectNames
from gateway.proxy import Forwarder, Forwarding
from gateway.shared_limits import SharedLimits
from gateway.state import RedisStore, StateUnavailable, open_store
from gateway.tokens import TokenBroker

log = logging.getLogger("azdo_gateway")


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
        self.pipeline = chain(PIPELINE)
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

    def pin(self, rt: Runtime) -> None:
        """A request starts on `rt` (see `retire`)."""
        key = id(rt)
        self._users[key] = self._users.get(key, 0) + 1

    def unpin(self, rt: Runtime) -> None:
        key = id(rt)
        left = self._users.pop(key) - 1
        if left:
            self._users[key] = left
        elif key in self._idle:
            self._idle[key].set()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Run `self.pipeline` (PIPELINE, composed once) for one request."""
        return await self.pipeline(Call(request, self))

    def proxy_server(self, **options: Any) -> web.Server:
        """The proxy's low-level aiohttp server; `options` go to aiohttp's RequestHandler.
        A request aiohttp cannot parse is answered by `gateway.listener`."""
        return ProxyServer(self.handle, **options)
