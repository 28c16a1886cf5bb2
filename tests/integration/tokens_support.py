"""Helpers for token tests: configs around a FakeEntra, a controllable clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config.model import Client, Config, GatewayConfig
from gateway.tokens import RefreshPolicy, TokenBroker
from gateway.types import ClientIdentity
from tests.fakes.entra import FakeEntra, RecordingMetrics

FAST = RefreshPolicy(backoff_base_s=0.05, backoff_cap_s=0.2, wait_s=5.0)


@pytest.fixture
async def started() -> AsyncIterator[Callable[[TokenBroker], Awaitable[TokenBroker]]]:
    """`await started(broker)`: start a broker, closed again when the test ends."""
    brokers: list[TokenBroker] = []

    async def start(broker: TokenBroker) -> TokenBroker:
        await broker.start()
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        await broker.close()


class Clock:
    """Wall time plus an offset that tests move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def config_for(
    entra: FakeEntra,
    credentials: dict[str, dict[str, Any]],
    clients: dict[str, str] | None = None,
    *,
    scopes: tuple[str, ...] = ("vso.code",),
    refresh_ahead_s: float = 300,
    ca_file: str | None = None,
) -> Config:
    """A Config with `credentials` and one client per credential (client name = credential
    name unless `clients` maps client -> credential)."""
    gw = GatewayConfig.model_validate(
        {
            "identity": {
                "authority_host": entra.url,
                "tenant_id": entra.tenant_id,
                "ca_file": ca_file or str(entra.ca_file),
                "refresh_ahead_s": refresh_ahead_s,
            },
            "credentials": credentials,
        }
    )
    clients = clients or {name: name for name in credentials}
    return Config(
        path=Path("gateway.yaml"),
        gateway=gw,
        clients=tuple(
            Client(name=c, credential=cred, scopes=scopes) for c, cred in clients.items()
        ),
        routes=(),
    )


def broker_for(
    config: Config, *, clock: Clock | None = None, policy: RefreshPolicy = FAST
) -> tuple[TokenBroker, RecordingMetrics]:
    metrics = RecordingMetrics()
    broker = TokenBroker(config, metrics=metrics, policy=policy, clock=clock or time.time)
    return broker, metrics


def app_identity(client: str) -> ClientIdentity:
    return ClientIdentity(client=client, auth_method="api_key", subject="k1")


def user_identity(entra: FakeEntra, client: str, oid: str) -> ClientIdentity:
    token = entra.mint_access_token({"oid": oid, "preferred_username": f"{oid}@example.com"})
    return ClientIdentity(
        client=client,
        auth_method="entra",
        subject=oid,
        tenant_id=entra.tenant_id,
        object_id=oid,
        user_assertion=token,
    )


def write_cert(entra: FakeEntra, tmp: Path, subject: str) -> tuple[Path, bytes]:
    issued = entra.ca.issue_client(subject)
    return issued.write(tmp / f"{subject}.pem"), issued.cert_pem
