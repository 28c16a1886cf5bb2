"""Start a real gateway (proxy and admin listeners) on loopback for a test."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway.app import Gateway, build_runtime
from gateway.loading import load_checked
from gateway.server import Listeners, start_listeners


def new_key(prefix: str = "azgw_test_") -> tuple[str, str]:
    """A gateway key for tests and the sha256 the policy stores for it."""
    key = prefix + secrets.token_urlsafe(24)
    return key, hashlib.sha256(key.encode()).hexdigest()


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs: bound,
    never listening. (A port merely closed again may meanwhile be taken by another
    process, or be the source port the kernel picks for the connection to it.)"""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@dataclass
class RunningGateway:
    url: str
    admin_url: str
    gateway: Gateway
    runners: list[web.AppRunner]
    config_path: Path
    listeners: Listeners | None = None

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        await self.gateway.close()


def write_config(tmp_path: Path, gateway_yaml: dict[str, Any], policies: dict[str, Any]) -> Path:
    """Write gateway.yaml (loopback, port 0, audit to a file) and its policy files."""
    pol_dir = tmp_path / "policies"
    pol_dir.mkdir(exist_ok=True)
    for name, body in policies.items():
        (pol_dir / name).write_text(yaml.safe_dump(body))
    doc = {"policies": ["policies/*.yaml"], "audit": {"file": str(tmp_path / "audit.jsonl")}}
    doc.update(gateway_yaml)
    doc.setdefault("listen", {}).setdefault("port", 0)
    doc["listen"].setdefault("host", "127.0.0.1")
    doc.setdefault("admin", {}).setdefault("port", 0)
    doc["admin"].setdefault("host", "127.0.0.1")
    cfg_path = tmp_path / "gateway.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    return cfg_path


def key_client_policy(digest: str, *, scopes: list[str]) -> dict[str, Any]:
    """Policy documents: one client `ci` with one gateway key, behind credential `server`."""
    client = {
        "name": "ci",
        "credential": "server",
        "scopes": scopes,
        "api_keys": [{"id": "k1", "sha256": digest}],
    }
    return {"ci.yaml": {"clients": [client]}}


def pat_client_config(
    upstream_url: str, digest: str, *, scopes: list[str], shutdown_grace_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """gateway.yaml and policy documents: one key client `ci` behind a PAT credential."""
    gateway_yaml = {
        "upstream": {"hosts": {"main": upstream_url}},
        "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        "limits": {"shutdown_grace_s": shutdown_grace_s},
    }
    return gateway_yaml, key_client_policy(digest, scopes=scopes)


async def start_gateway(
    tmp_path: Path, gateway_yaml: dict[str, Any], policies: dict[str, Any]
) -> RunningGateway:
    """Write the config files, load them like `run` does, serve on port 0."""
    cfg_path = write_config(tmp_path, gateway_yaml, policies)
    config = load_checked(cfg_path)
    gateway = Gateway(build_runtime(config))
    await gateway.start()
    listeners = await start_listeners(gateway, config)
    return RunningGateway(
        url=listeners.proxy_url,
        admin_url=listeners.admin_url,
        gateway=gateway,
        runners=[listeners.proxy, listeners.admin],
        config_path=cfg_path,
        listeners=listeners,
    )
