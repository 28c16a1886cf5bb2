"""What the gateway answers when upstream fails, rejects its credential, or the client leaves."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.types import ClientIdentity, RequestContext, UpstreamToken
from tests.fakes.permissive import PAT_HEADER, Proxy, start_proxy
from tests.harness import refusing_port


@pytest.fixture
async def proxy(make_fake_azdo: Any, make_gateway: Any) -> Proxy:
    return await start_proxy(
        make_fake_azdo, make_gateway, upstream={"read_timeout_s": 0.5, "connect_timeout_s": 2}
    )


def record_finished(proxy: Proxy) -> list[RequestContext]:
    finished: list[RequestContext] = []
    obs = proxy.gw.gateway.observability
    original = obs.finished

    def spy(ctx: RequestContext) -> None:
        finished.append(ctx)
        original(ctx)

    obs.finished = spy  # type: ignore[method-assign]
    return finished


async def gateway_error(r: aiohttp.ClientResponse) -> dict[str, Any]:
    assert r.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = await r.json()
    assert body["source"] == "azdo-gateway"
    assert body["requestId"] == r.headers["X-Request-ID"]
    return body


@pytest.fixture
def closed_port() -> Iterator[int]:
    with refusing_port() as port:
        yield port


async def test_unreachable_upstream_is_502(
    make_fake_azdo: Any, make_gateway: Any, closed_port: int
) -> None:
    proxy = await start_proxy(
        make_fake_azdo,
        make_gateway,
        upstream={"hosts": {"main": f"http://127.0.0.1:{closed_port}"}},
    )
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/fabrikam/_apis/projects", headers=proxy.auth) as r,
    ):
        assert r.status == 502
        body = await gateway_error(r)
    assert body["reason"] == "upstream_unreachable"
    assert body["error"].startswith("upstream host 'main' is unreachable")


async def test_upstream_that_never_answers_is_504(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/_fake/stall", headers=proxy.auth) as r,
    ):
        assert r.status == 504
        body = await gateway_error(r)
    assert body["reason"] == "upstream_timeout"
    assert body["error"] == "upstream host 'main' did not answer in time"


async def test_answer_that_is_not_http_is_502_bad_response(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/_fake/garbage", headers=proxy.auth) as r,
    ):
        assert r.status == 502
        body = await gateway_error(r)
    assert body["reason"] == "bad_upstream_response"


@pytest.mark.parametrize(
    "path, reason",
    [("/_fake/cut-body", "bad_upstream_response"), ("/_fake/stall-body", "upstream_timeout")],
)
async def test_failure_mid_body_aborts_the_connection(proxy: Proxy, path: str, reason: str) -> None:
    finished = record_finished(proxy)
    got = 0
    async with aiohttp.ClientSession() as s, s.get(proxy.url + path, headers=proxy.auth) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(1 << 20)
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                got += len(chunk)
    assert got <= 1 << 19  # never more than upstream sent, and no JSON error appended
    [ctx] = finished
    assert ctx.error_reason == reason
    assert ctx.upstream_status == 200


async def test_failure_mid_chunked_body_is_not_terminated_cleanly(proxy: Proxy) -> None:
    """A chunked answer cut short must not end with the last-chunk marker."""
    reader, writer = await asyncio.open_connection(*proxy.url.removeprefix("http://").split(":"))
    auth = proxy.auth["Authorization"]
    request = f"GET /_fake/cut-body?chunked=1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
    writer.write(request.encode() + b"\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)  # until the gateway closes
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    assert len(body) < 1 << 20
    assert not body.endswith(b"0\r\n\r\n")


async def test_client_that_leaves_cancels_the_upstream_call(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as s:
        call = asyncio.ensure_future(s.get(proxy.url + "/_fake/hold", headers=proxy.auth))
        await asyncio.wait_for(proxy.fake.held.wait(), 10)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await asyncio.wait_for(proxy.fake.finished.wait(), 10)
    assert proxy.fake.cancelled == 1


class FlakyBroker:
    """Hands out `old` until it is invalidated, then `new`."""

    def __init__(self) -> None:
        self.current = UpstreamToken("Bearer old-token", "server")
        self.invalidated: list[str] = []

    async def acquire(self, identity: ClientIdentity, client: Any) -> UpstreamToken:
        return self.current

    def invalidate(self, token: UpstreamToken) -> None:
        self.invalidated.append(token.header_value)
        self.current = UpstreamToken("Bearer new-token", "server")

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    async def start(self) -> None: ...
    async def close(self) -> None: ...


@pytest.mark.parametrize("status", [401, 203])
async def test_rejected_token_is_invalidated_and_get_retried_once(
    proxy: Proxy, status: int
) -> None:
    broker = FlakyBroker()
    gw = proxy.gw.gateway
    gw.swap(dataclasses.replace(gw.runtime, tokens=broker))  # type: ignore[arg-type]
    proxy.fake.reject, proxy.fake.reject_status = {"Bearer old-token"}, status
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/fabrikam/_apis/projects", headers=proxy.auth) as r,
    ):
        assert r.status == 200
    assert [x.headers["Authorization"] for x in proxy.fake.seen] == [
        "Bearer old-token",
        "Bearer new-token",
    ]
    assert broker.invalidated == ["Bearer old-token"]


async def test_rejected_pat_is_502_after_one_retry(proxy: Proxy) -> None:
    proxy.fake.reject = {PAT_HEADER}
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/fabrikam/_apis/projects", headers=proxy.auth) as r,
    ):
        assert r.status == 502
        body = await gateway_error(r)
        assert "WWW-Authenticate" not in r.headers
    assert body["reason"] == "upstream_credential_rejected"
    assert body["error"].startswith("Azure DevOps rejected the gateway's credential 'server'")
    assert len(proxy.fake.seen) == 2


async def test_rejected_token_with_streamed_body_is_not_retried(proxy: Proxy) -> None:
    broker = FlakyBroker()
    gw = proxy.gw.gateway
    gw.swap(dataclasses.replace(gw.runtime, tokens=broker))  # type: ignore[arg-type]
    proxy.fake.reject = {"Bearer old-token"}

    async def body() -> AsyncIterator[bytes]:
        yield b'{"name": "x"}'

    async with aiohttp.ClientSession() as s:
        async with s.put(proxy.url + "/fabrikam/_apis/wit/x", data=body(), headers=proxy.auth) as r:
            assert r.status == 502
            assert (await gateway_error(r))["reason"] == "upstream_credential_rejected"
        async with s.post(
            proxy.url + "/fabrikam/_apis/wit/x", data=b"{}", headers=proxy.auth
        ) as r:  # POST: not idempotent, the new token works
            assert r.status == 200
    assert [x.method for x in proxy.fake.seen] == ["PUT", "POST"]
    assert broker.invalidated == ["Bearer old-token"]


async def test_body_over_the_limit_is_413_and_not_sent(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    proxy = await start_proxy(make_fake_azdo, make_gateway, limits={"max_body_bytes": 1000})
    async with aiohttp.ClientSession() as s:
        async with s.post(
            proxy.url + "/fabrikam/_apis/x", data=b"x" * 1001, headers=proxy.auth
        ) as r:
            assert r.status == 413
            assert (await gateway_error(r))["reason"] == "payload_too_large"
        async with s.post(
            proxy.url + "/fabrikam/_apis/x", data=b"x" * 1000, headers=proxy.auth
        ) as r:
            assert r.status == 200
    assert [x.body_len for x in proxy.fake.seen] == [1000]


async def test_chunked_body_over_the_limit_is_cut_off(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    proxy = await start_proxy(make_fake_azdo, make_gateway, limits={"max_body_bytes": 100_000})
    finished = record_finished(proxy)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(50):
            yield b"y" * 10_000

    async with aiohttp.ClientSession() as s:
        try:
            async with s.post(
                proxy.url + "/fabrikam/_apis/x", data=body(), headers=proxy.auth
            ) as r:
                assert r.status == 413
        except aiohttp.ClientError:
            pass  # the gateway may close before the client finished sending
    assert all(x.body_len <= 100_000 for x in proxy.fake.seen)
    [ctx] = finished
    assert ctx.status == 413 and ctx.error_reason == "payload_too_large"


async def test_json_bodies_are_rewritten_and_large_ones_streamed_untouched(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    proxy = await start_proxy(make_fake_azdo, make_gateway, limits={"rewrite_max_bytes": 4000})
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        for query in ("", "?chunked=1"):
            async with s.get(proxy.url + "/_fake/json" + query, headers=proxy.auth) as r:
                data = await r.read()
                assert r.headers["Content-Length"] == str(len(data))
            doc = json.loads(data)
            assert doc["url"] == proxy.url + "/fabrikam/_apis/git/repositories/1"
            assert doc["_links"]["self"]["href"] == proxy.url + "/fabrikam/_apis/projects/2"
        for query in ("?pad=5000", "?pad=5000&chunked=1"):
            async with s.get(proxy.url + "/_fake/json" + query, headers=proxy.auth) as r:
                data = await r.read()
            doc = json.loads(data)
            assert doc["url"] == proxy.fake.url + "/fabrikam/_apis/git/repositories/1"
            assert len(doc["pad"]) == 5000


async def test_upstream_tls_needs_a_trusted_ca(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    fake = await make_fake_azdo(tls=server_ctx)
    untrusted = await start_proxy(make_fake_azdo, make_gateway, fake=fake)
    ca_file = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    trusted = await start_proxy(
        make_fake_azdo, make_gateway, fake=fake, upstream={"ca_file": str(ca_file)}
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(untrusted.url + "/fabrikam/_apis/projects", headers=untrusted.auth) as r:
            assert r.status == 502
            body = await gateway_error(r)
            assert body["reason"] == "upstream_unreachable"
            assert "TLS certificate not trusted" in body["error"]
        async with s.get(trusted.url + "/fabrikam/_apis/projects", headers=trusted.auth) as r:
            assert r.status == 200
    assert len(fake.seen) == 1
