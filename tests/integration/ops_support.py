"""Helpers for operations tests: a gateway whose catalog, policy and tokens
are small, explicit stand-ins, so that metrics, audit, limits and reload are
tested against the real pipeline without depending on the full catalog."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway, Runtime
from gateway.authn import Authentication
from gateway.catalog import Catalog
from gateway.config.model import Client, Config
from gateway.errors import CredentialUnavailable
from gateway.proxy import Forwarding
from gateway.tokens import TokenBroker
from gateway.types import ClientIdentity, Decision, Match, Operation, RequestContext, UpstreamToken
from tests.samples import REPOSITORIES_LIST

OPERATIONS = (
    (
        re.compile(r"^/(?P<org>[^/]+)/(?P<proj>[^/]+)/_apis/git/repositories$"),
        REPOSITORIES_LIST,
    ),
    (
        re.compile(r"^/(?P<org>[^/]+)/(?P<proj>[^/]+)/_apis/build/builds$"),
        Operation(
            "build.Builds_Queue",
            "build",
            "main",
            "POST",
            "/{organization}/{project}/_apis/build/builds",
            ("vso.build_execute",),
        ),
    ),
    (
        re.compile(r"^/(?P<org>[^/]+)/_apis/projects$"),
        Operation(
            "core.Projects_List",
            "core",
            "main",
            "GET",
            "/{organization}/_apis/projects",
            ("vso.project",),
        ),
    ),
)


class FixedCatalog(Catalog):
    def __init__(self) -> None:
        super().__init__(tuple(op for _, op in OPERATIONS))

    def match(self, host: str, method: str, path: str, query: str = "") -> Match | None:
        for rx, op in OPERATIONS:
            m = rx.match(path)
            if m and op.method == method:
                d = m.groupdict()
                proj = d.get("proj")
                return Match(op, {}, d["org"], proj)
        return None


class ScopePolicy:
    """Allow when the client holds one of the operation's scopes."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def project_lookup(self, client: str, match: Match | None) -> bool:
        return False  # projects are not restricted here

    def authorize(self, identity: ClientIdentity, ctx: RequestContext) -> Decision:
        if ctx.match is None:
            return Decision(False, "no_matching_operation", message="no operation matches")
        client = self.config.client(identity.client)
        need = ctx.match.operation.scopes
        if client is not None and set(need) & set(client.scopes):
            return Decision(True, None, need)
        if client is not None and client.mode == "report":
            return Decision(True, "missing_scope", need, report_only=True)
        return Decision(False, "missing_scope", need, message="missing scope")


class Tokens:
    """The real TokenBroker, checking that the client it is asked for comes from
    the same configuration (the runtime a request is pinned to)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.inner = TokenBroker(config)

    def adopt(self, previous: Tokens | TokenBroker) -> None:
        self.inner.adopt(previous.inner if isinstance(previous, Tokens) else previous)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def ready(self) -> tuple[bool, str]:
        return self.inner.ready()

    async def acquire(self, identity: ClientIdentity, client: Client) -> UpstreamToken:
        if not any(c is client for c in self.config.clients):
            # the request's client came from another configuration than these tokens:
            # a request that saw half of one reload and half of another
            raise CredentialUnavailable("client and token broker from different configurations")
        return await self.inner.acquire(identity, client)

    def invalidate(self, token: UpstreamToken) -> None:
        self.inner.invalidate(token)


class PausingAuthentication(Authentication):
    """Real key authentication that yields to the event loop first, as an Entra
    token check that fetches keys would: a reload can happen meanwhile."""

    async def authenticate(self, request: web.Request, ctx: RequestContext) -> ClientIdentity:
        await asyncio.sleep(0.001)
        return await super().authenticate(request, ctx)


def runtime(config: Config) -> Runtime:
    return Runtime(
        config=config,
        catalog=FixedCatalog(),
        policy=ScopePolicy(config),  # type: ignore[arg-type]
        authn=PausingAuthentication(config),
        tokens=Tokens(config),  # type: ignore[arg-type]
        forwarding=Forwarding.from_config(config),
    )


def audit_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class Upstream:
    """A scriptable Azure DevOps stand-in: `respond` decides each answer;
    `hold` (when set) keeps requests waiting until it is released."""

    def __init__(self) -> None:
        self.url = ""
        self.runner: web.AppRunner | None = None
        self.seen: list[web.Request] = []
        self.headers: dict[str, str] = {}
        self.status = 200
        self.hold: asyncio.Event | None = None
        self.arrived = asyncio.Condition()

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(request)
        async with self.arrived:
            self.arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        return web.json_response(
            {"count": 0, "value": []}, status=self.status, headers=self.headers
        )

    async def wait_for(self, n: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.seen) >= n)

    async def start(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """A stand-in Azure DevOps upstream, stopped when the test ends."""
    up = await Upstream().start()
    yield up
    await up.close()


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            values[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return values


def metric(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


async def use_test_runtime(gateway: Gateway) -> None:
    """Swap the stand-in catalog/policy into a running gateway the way a reload does."""
    new = runtime(gateway.runtime.config)
    new.tokens.adopt(gateway.runtime.tokens)  # type: ignore[arg-type]
    await new.tokens.start()
    await gateway.retire(gateway.swap(new), 1)
