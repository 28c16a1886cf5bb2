"""The packaged Azure DevOps stand-in with request recording and an `intercept()`
hook for canned answers, and a guard that notices any request a real client sends
somewhere other than the gateway."""

from __future__ import annotations

import base64
import contextlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.demo.azdo import AzdoStandIn

UPSTREAM_PAT = "upstream-pat-Zq3"


def pat_header(pat: str = UPSTREAM_PAT) -> str:
    return "Basic " + base64.b64encode(f":{pat}".encode()).decode()


@dataclass(frozen=True)
class Received:
    host: str
    method: str
    path_qs: str
    authorization: str
    headers: dict[str, str]


class RecordingAzdo(AzdoStandIn):
    """Accepts only the gateway's injected PAT and records every request."""

    def __init__(self, root: Path) -> None:
        expected = pat_header()
        super().__init__(root, lambda got: hmac.compare_digest(got, expected))
        self.received: list[Received] = []

    async def _dispatch(self, host: str, request: web.Request) -> web.StreamResponse:
        hooked = await self.intercept(host, request)
        return hooked if hooked is not None else await super()._dispatch(host, request)

    async def intercept(self, host: str, request: web.Request) -> web.StreamResponse | None:
        """Records the request; subclasses may answer it instead (None: serve normally)."""
        self.received.append(
            Received(
                host,
                request.method,
                request.path_qs,
                request.headers.get("Authorization", ""),
                dict(request.headers),
            )
        )
        return None


@contextlib.asynccontextmanager
async def running_azdo(root: Path) -> AsyncIterator[RecordingAzdo]:
    standin = await RecordingAzdo(root).start()
    try:
        yield standin
    finally:
        await standin.close()


def gateway_config(standin: AzdoStandIn, **extra: object) -> dict[str, object]:
    """gateway.yaml for a gateway in front of `standin` that injects the PAT it accepts."""
    return {
        "upstream": {"hosts": standin.hosts},
        "credentials": {"server": {"type": "pat", "pat": UPSTREAM_PAT}},
        **extra,
    }


def client(name: str, digest: str, scopes: list[str], **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "credential": "server",
        "scopes": scopes,
        "api_keys": [{"id": f"{name}-k1", "sha256": digest}],
        **extra,
    }
