"""Egress through a real forward proxy on loopback: Azure DevOps and the identity
provider alike (`upstream.proxy`, or `upstream.trust_env` with HTTPS_PROXY/NO_PROXY)."""

from __future__ import annotations

import dataclasses
import json
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.config.model import Upstream
from tests.fakes.forwardproxy import ForwardProxy
from tests.fakes.permissive import start_proxy
from tests.harness import refusing_port
from tests.integration.tokens_support import app_identity, broker_for, config_for

SECRET = "egress-s3cret"
USERINFO = f"egress-user:{SECRET}"


@pytest.fixture
async def egress() -> AsyncIterator[ForwardProxy]:
    proxy = await ForwardProxy(credentials=USERINFO).start()
    yield proxy
    await proxy.close()


async def get(url: str, auth: dict[str, str]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url, headers=auth) as r:
        return r.status, await r.read()


async def test_plain_http_upstream_goes_through_the_proxy_with_its_credentials(
    make_fake_azdo: Any, make_gateway: Any, egress: ForwardProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await start_proxy(make_fake_azdo, make_gateway, upstream={"proxy": egress.url(USERINFO)})
    status, _ = await get(gw.url + "/fabrikam/_apis/projects?api-version=7.1", gw.auth)
    assert status == 200
    assert egress.seen == [f"GET {gw.fake.url}/fabrikam/_apis/projects?api-version=7.1"]
    assert egress.authorizations == [aiohttp.encode_basic_auth("egress-user", SECRET)]
    assert len(gw.fake.seen) == 1
    assert SECRET not in caplog.text


async def test_https_upstream_is_tunnelled_with_connect(
    make_fake_azdo: Any, make_gateway: Any, egress: ForwardProxy, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    fake = await make_fake_azdo(tls=server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    gw = await start_proxy(
        make_fake_azdo,
        make_gateway,
        fake=fake,
        upstream={"proxy": egress.url(USERINFO), "ca_file": str(ca_file)},
    )
    for _ in range(2):  # the second request reuses the tunnel
        status, _ = await get(gw.url + "/fabrikam/_apis/projects", gw.auth)
        assert status == 200
    port = fake.url.rsplit(":", 1)[1]
    assert egress.seen == [f"CONNECT 127.0.0.1:{port}"]
    assert len(fake.seen) == 2


@pytest.mark.parametrize("no_proxy, via_proxy", [("", True), ("127.0.0.1", False)])
async def test_trust_env_takes_https_proxy_and_no_proxy(
    make_fake_azdo: Any,
    make_gateway: Any,
    egress: ForwardProxy,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    via_proxy: bool,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", egress.url(USERINFO))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    gw = await start_proxy(make_fake_azdo, make_gateway, upstream={"trust_env": True})
    assert (await get(gw.url + "/fabrikam/_apis/projects", gw.auth))[0] == 200
    assert len(egress.seen) == (1 if via_proxy else 0)
    assert len(gw.fake.seen) == 1


async def test_environment_is_ignored_without_trust_env(
    make_fake_azdo: Any, make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with refusing_port() as port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        gw = await start_proxy(make_fake_azdo, make_gateway)
        assert (await get(gw.url + "/fabrikam/_apis/projects", gw.auth))[0] == 200


@pytest.mark.parametrize("userinfo", [None, "egress-user:wrong-password"])
async def test_proxy_refusing_is_502_without_its_credentials_anywhere(
    make_fake_azdo: Any,
    make_gateway: Any,
    egress: ForwardProxy,
    caplog: pytest.LogCaptureFixture,
    userinfo: str | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await start_proxy(make_fake_azdo, make_gateway, upstream={"proxy": egress.url(userinfo)})
    status, body = await get(gw.url + "/fabrikam/_apis/projects", gw.auth)
    assert status == 502
    doc = json.loads(body)
    assert doc["reason"] == "upstream_unreachable"
    assert (
        doc["error"] == "upstream host 'main': the egress proxy refused the connection (HTTP 407)"
    )
    assert not gw.fake.seen
    assert "wrong-password" not in body.decode() and "wrong-password" not in caplog.text


async def test_unreachable_proxy_is_502_and_never_shows_its_password(
    make_fake_azdo: Any, make_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with refusing_port() as port:
        proxy = f"http://{USERINFO}@127.0.0.1:{port}"
        gw = await start_proxy(make_fake_azdo, make_gateway, upstream={"proxy": proxy})
        status, body = await get(gw.url + "/fabrikam/_apis/projects", gw.auth)
    assert status == 502
    doc = json.loads(body)
    assert doc["reason"] == "upstream_unreachable"
    assert doc["error"].startswith("upstream host 'main': the egress proxy is unreachable (")
    assert SECRET not in body.decode() and SECRET not in caplog.text


async def test_msal_reaches_the_identity_provider_through_the_same_proxy(
    make_entra: Any, egress: ForwardProxy, started: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    entra = await make_entra()
    entra.register_app("sp", secret="sp-secret")
    config = config_for(entra, {"sp": {"type": "client_secret", "client_id": "sp",
                                       "client_secret": "sp-secret"}})  # fmt: skip
    gw = config.gateway.model_copy(update={"upstream": Upstream(proxy=egress.url(USERINFO))})
    config = dataclasses.replace(config, gateway=gw)
    broker, _ = broker_for(config)
    await started(broker)
    token = await broker.acquire(app_identity("sp"), config.clients[0])
    assert token.header_value.startswith("Bearer ")
    port = entra.url.rsplit(":", 1)[1].rstrip("/")
    assert egress.seen and set(egress.seen) == {f"CONNECT 127.0.0.1:{port}"}
    assert set(egress.authorizations) == {aiohttp.encode_basic_auth("egress-user", SECRET)}
    assert SECRET not in caplog.text


async def test_msal_without_a_proxy_connects_directly(
    make_entra: Any, started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with refusing_port() as port:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")  # not trusted: unused
        entra = await make_entra()
        entra.register_app("sp", secret="s")
        config = config_for(entra, {"sp": {"type": "client_secret", "client_id": "sp",
                                           "client_secret": "s"}})  # fmt: skip
        broker, _ = broker_for(config)
        await started(broker)
        token = await broker.acquire(app_identity("sp"), config.clients[0])
        assert token.header_value.startswith("Bearer ")
