"""Forwarding through a real gateway to a fake Azure DevOps: headers, paths, bodies."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.azdo import PATTERN
from tests.fakes.permissive import PAT, PAT_HEADER, Proxy, start_proxy


@pytest.fixture
async def proxy(make_fake_azdo: Any, make_gateway: Any) -> Proxy:
    return await start_proxy(make_fake_azdo, make_gateway)


async def test_request_headers_are_cleaned_and_upstream_credential_injected(proxy: Proxy) -> None:
    sent = {
        **proxy.auth,
        "Cookie": "session=client-cookie",
        "Proxy-Authorization": "Basic cHJveHk6cHJveHk=",
        "Proxy_Authorization": "Basic dW5kZXJzY29yZQ==",
        "X-HTTP-Method-Override": "PATCH",
        "X_HTTP_Method_Override": "PATCH",
        "X-Method-Override": "PATCH",
        "Connection": "keep-alive, X-Hop-Secret",
        "X-Hop-Secret": "must not cross",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Upgrade": "websocket",
        "X-TFS-FedAuthRedirect": "Allow",
        "X-Request-ID": "client-chosen-id-1",
        "Accept": "application/json;api-version=7.1",
        "X-TFS-Session": "d0c0ffee-0000-4000-8000-00000000c11e",
        "User-Agent": "VSServices/16.0 (fabrikam-ci)",
    }
    client = aiohttp.ClientSession(skip_auto_headers=("Accept-Encoding",))
    async with (
        client as s,
        s.post(proxy.url + "/fabrikam/_apis/projects?api-version=7.1", headers=sent) as r,
    ):
        assert r.status == 200
        assert r.headers["X-Request-ID"] == "client-chosen-id-1"
    [seen] = proxy.fake.seen
    assert seen.method == "PATCH"  # authorized as, and sent as, the method the override names
    names = {name.lower() for name, _ in seen.raw_headers}
    for dropped in (
        "cookie",
        "proxy-authorization",
        "proxy_authorization",
        "x-http-method-override",
        "x_http_method_override",
        "x-method-override",
        "x-hop-secret",
        "keep-alive",
        "te",
        "upgrade",
    ):
        assert dropped not in names, dropped
    assert seen.headers["Authorization"] == PAT_HEADER
    assert [v for k, v in seen.raw_headers if k.lower() == "authorization"] == [PAT_HEADER]
    assert proxy.key not in str(seen.raw_headers)
    assert seen.headers["Host"] == proxy.fake.url.removeprefix("http://")
    assert seen.headers["X-TFS-FedAuthRedirect"] == "Suppress"
    assert seen.headers["X-Request-ID"] == "client-chosen-id-1"
    assert seen.headers["Accept"] == "application/json;api-version=7.1"
    assert seen.headers["X-TFS-Session"] == "d0c0ffee-0000-4000-8000-00000000c11e"
    assert seen.headers["User-Agent"] == "VSServices/16.0 (fabrikam-ci)"
    assert "Accept-Encoding" not in seen.headers  # none added on the client's behalf
    assert seen.headers.get("Connection", "keep-alive").lower() == "keep-alive"


async def test_response_headers_pass_azure_devops_ones_and_drop_the_rest(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/_fake/headers", headers={**proxy.auth, "X-Request-ID": "rid-42"}) as r,
    ):
        assert r.status == 200
        got = r.headers
        assert got["ActivityId"] == "5e2a1c7e-0000-4000-8000-000000000001"
        assert got["X-TFS-Session"] == "5e2a1c7e-0000-4000-8000-000000000002"
        assert got["X-VSS-E2EID"] == "5e2a1c7e-0000-4000-8000-000000000003"
        assert got["x-ms-continuationtoken"] == "next-page-token"
        assert got["Retry-After"] == "3"
        assert got["X-RateLimit-Remaining"] == "10"
        assert got["X-Request-ID"] == "rid-42"
        for dropped in ("Set-Cookie", "Alt-Svc", "X-Private", "Proxy-Authenticate"):
            assert dropped not in got, dropped
        assert "timeout=5" not in got.get("Keep-Alive", "")
        assert await r.json() == {"value": []}


async def test_method_path_and_query_reach_upstream_verbatim(proxy: Proxy) -> None:
    target = "/fabrikam/Fabrikam%20Fiber/_apis/wit/wiql?api-version=7.1&%24top=5&a=1&a=2&q=x+y"
    async with aiohttp.ClientSession() as s:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            async with s.request(
                method, aiohttp.client.URL(proxy.url + target, encoded=True), headers=proxy.auth
            ) as r:
                assert r.status == 200, method
        async with s.head(proxy.url + "/fabrikam/_apis/projects", headers=proxy.auth) as r:
            assert r.status == 200
    assert [x.method for x in proxy.fake.seen] == [
        "GET",
        "POST",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "HEAD",
    ]
    for seen in proxy.fake.seen[:-1]:
        assert seen.path == "/fabrikam/Fabrikam%20Fiber/_apis/wit/wiql"
        assert seen.query == "api-version=7.1&%24top=5&a=1&a=2&q=x+y"


async def test_other_hosts_are_reached_under_hosts_prefix(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            proxy.url + "/_hosts/vsrm/fabrikam/_apis/release/releases?api-version=7.1",
            headers=proxy.auth,
        ) as r,
    ):
        assert r.status == 200
    [seen] = proxy.fake.seen
    assert seen.path == "/vsrm/fabrikam/_apis/release/releases"
    assert seen.query == "api-version=7.1"


async def test_upload_with_length_and_chunked_upload_stream_through(proxy: Proxy) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(blob), 100_000):
            yield blob[i : i + 100_000]

    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as s:
        async with s.post(
            proxy.url + "/fabrikam/_apis/git/pushes",
            data=io.BytesIO(blob),
            headers={**proxy.auth, "Content-Type": "application/octet-stream"},
        ) as r:
            echoed = await r.json()
        async with s.put(
            proxy.url + "/fabrikam/_apis/upload", data=chunks(), headers=proxy.auth
        ) as r:
            echoed_chunked = await r.json()
    digest = hashlib.sha256(blob).hexdigest()
    assert echoed["bodySha256"] == echoed_chunked["bodySha256"] == digest
    with_length, chunked = proxy.fake.seen
    assert with_length.headers["Content-Length"] == str(len(blob))
    assert with_length.headers["Content-Type"] == "application/octet-stream"
    assert "Content-Length" not in chunked.headers
    assert chunked.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Type" not in chunked.headers  # none invented
    assert chunked.body_len == len(blob)


async def test_empty_post_keeps_zero_content_length(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(proxy.url + "/fabrikam/_apis/build/builds", headers=proxy.auth) as r,
    ):
        assert r.status == 200
    assert proxy.fake.seen[0].headers["Content-Length"] == "0"


@pytest.mark.parametrize("chunked", [False, True])
async def test_large_download_streams_whole(proxy: Proxy, chunked: bool) -> None:
    n = 48 * 1024 * 1024 + 5
    query = "?chunked=1" if chunked else ""
    digest, got = hashlib.sha256(), 0
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + f"/_fake/bytes/{n}{query}", headers=proxy.auth) as r,
    ):
        assert r.status == 200
        assert r.headers.get("Content-Length") == (None if chunked else str(n))
        async for chunk in r.content.iter_any():
            digest.update(chunk)
            got += len(chunk)
    expected = hashlib.sha256()
    for i in range(0, n, len(PATTERN)):
        expected.update(PATTERN[: min(len(PATTERN), n - i)])
    assert got == n
    assert digest.hexdigest() == expected.hexdigest()


@pytest.mark.parametrize("code", [400, 404, 409, 429, 500, 503])
async def test_upstream_error_statuses_pass_through_untouched(proxy: Proxy, code: int) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + f"/_fake/status/{code}", headers=proxy.auth) as r,
    ):
        assert r.status == code
        assert r.headers["Retry-After"] == "7"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        assert r.headers["X-RateLimit-Delay"] == "1.5"
        body = await r.json()
    assert body == {"message": f"fake status {code}", "typeKey": "FakeException"}


async def test_redirects_are_relayed_not_followed(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/_fake/status/302", headers=proxy.auth, allow_redirects=False) as r,
    ):
        assert r.status == 302
        assert r.headers["Location"] == "https://elsewhere.example/fabrikam/moved"
        async with s.get(
            proxy.url + "/_fake/status/302?here=1", headers=proxy.auth, allow_redirects=False
        ) as r:
            assert r.status == 302  # a Location on the upstream host points at the gateway
            assert r.headers["Location"] == proxy.url + "/fabrikam/moved"
    assert len(proxy.fake.seen) == 2


async def test_upstream_pat_is_never_echoed_to_the_client(proxy: Proxy) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.get(proxy.url + "/_fake/headers", headers=proxy.auth) as r,
    ):
        text = await r.text()
        assert PAT not in text and PAT not in str(r.headers)


async def test_context_is_filled_for_metrics_and_audit(proxy: Proxy) -> None:
    finished = []
    proxy.gw.gateway.observability.finished = finished.append  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url + "/_fake/headers", data=b"x" * 1000, headers=proxy.auth) as r:
            body = await r.read()
    [ctx] = finished
    assert ctx.upstream_status == 200
    assert ctx.activity_id == "5e2a1c7e-0000-4000-8000-000000000001"
    assert ctx.credential == "server"
    assert ctx.bytes_in == 1000
    assert ctx.bytes_out == len(body)
    assert ctx.upstream_seconds is not None and ctx.upstream_seconds >= 0
    assert ctx.status == 200


async def test_expect_100_continue_is_answered_once_the_request_is_allowed(proxy: Proxy) -> None:
    """The client holds its body back until the gateway has checked the request."""
    host, port = proxy.url.removeprefix("http://").split(":")
    auth = proxy.auth["Authorization"]
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b'{"name": "held back"}'
    head = (
        f"POST /fabrikam/_apis/wit/x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    writer.write(head.encode())
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert proxy.fake.seen == []  # nothing went upstream before the body came
    writer.write(body)
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 200")
    [seen] = proxy.fake.seen
    assert seen.body_len == len(body)
    assert "expect" not in {name.lower() for name, _ in seen.raw_headers}


async def test_expect_100_continue_is_not_answered_for_a_refused_request(proxy: Proxy) -> None:
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /fabrikam/_apis/wit/x HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Onf4\r\n"
        b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 401")
    assert proxy.fake.seen == []


async def _chunked_post(proxy: Proxy, extra: str) -> bytes:
    host, port = proxy.url.removeprefix("http://").split(":")
    auth = proxy.auth["Authorization"]
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /fabrikam/_apis/wit/x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
        'd\r\n{"name": "x"}\r\n0\r\n\r\n'.encode()
    )
    status = await reader.readline()
    writer.close()
    return status


async def test_framing_headers_spelled_with_underscores_never_reach_upstream(
    proxy: Proxy,
) -> None:
    """A chunked body with `Content_Length` beside it (a CL.TE pair for a server
    that reads `_` as `-`): upstream gets the body framed one way only."""
    extra = "Content_Length: 3\r\nX_HTTP_Method_Override: PATCH\r\n"
    status = await _chunked_post(proxy, extra)
    assert status.startswith(b"HTTP/1.1 200"), status
    [seen] = proxy.fake.seen
    assert seen.method == "PATCH"  # authorized and sent as the override names
    assert seen.body_len == 13
    names = [name.lower() for name, _ in seen.raw_headers]
    assert [n for n in names if "_" in n] == []
    assert "content-length" not in names or "transfer-encoding" not in names


@pytest.mark.parametrize("extra", ["Transfer_Encoding: identity", "Transfer-Encoding: chunked"])
async def test_a_second_transfer_encoding_in_any_spelling_is_refused(
    proxy: Proxy, extra: str
) -> None:
    status = await _chunked_post(proxy, extra + "\r\n")
    assert status.split()[1] == b"400", status  # by the gateway, or aiohttp's parser
    assert proxy.fake.seen == []
