from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.fakes.azdo import FakeAzdo, start_fake_azdo
from tests.fakes.entra import make_entra  # noqa: F401 - fixture
from tests.harness import RunningGateway, start_gateway

_SCRUB = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's proxies, CA bundles or Azure identity."""
    for name in list(os.environ):
        if name.upper() in _SCRUB or name.upper().startswith(("AZURE_", "MSAL_")):
            monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
async def make_fake_azdo() -> AsyncIterator[Callable[..., Any]]:
    started: list[FakeAzdo] = []

    async def make(**kwargs: Any) -> FakeAzdo:
        fake = await start_fake_azdo(**kwargs)
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.close()


@pytest.fixture
async def make_gateway(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningGateway] = []

    async def make(
        gateway_yaml: dict[str, Any], policies: dict[str, Any] | None = None, **kwargs: Any
    ) -> RunningGateway:
        gw = await start_gateway(tmp_path, gateway_yaml, policies or {}, **kwargs)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.close()


@pytest.fixture
async def make_redis(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """`await make_redis(tcp=False)`: a real redis-server of its own (tests/redisd.py)."""
    from tests.redisd import RedisServer, start_redis

    started: list[RedisServer] = []

    async def make(*, tcp: bool = False) -> RedisServer:
        server = await start_redis(tmp_path / f"redis{len(started)}", tcp=tcp)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.close()
