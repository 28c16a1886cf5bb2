"""Hostile and broken upstream answers, byte for byte, through the whole gateway.

A raw-socket upstream (`tests.fakes.rawupstream`) sends exactly the bytes each
test gives it. A broken answer is a 502 `bad_upstream_response` (JSON, from the
gateway) and its connection is never used again: the next request gets its
own answer on a new connection. A body that breaks after its headers were
relayed cuts the client's connection.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.fakes.permissive import PAT, Proxy, start_proxy
from tests.fakes.rawupstream import CLOSE, OK, Early, Pause, RawUpstream, Sent, Wait, answer

MakeRaw = Callable[..., Awaitable[tuple[RawUpstream, Proxy]]]
NEXT = answer(200, b'{"next": true}', "Content-Type: application/json")


@pytest.fixture
async def make_raw(make_fake_azdo: Any, make_gateway: Any) -> AsyncIterator[MakeRaw]:
    started: list[RawUpstream] = []

    async def make(
        script: list[list[Any]], then: Any = NEXT, **upstream: Any
    ) -> tuple[RawUpstream, Proxy]:
        raw = await RawUpstream(script=script, then=then).start()
        started.append(raw)
        options = {"read_timeout_s": 5, "connect_timeout_s": 5, **upstream}
        proxy = await start_proxy(
            make_fake_azdo,
            make_gateway,
            fake=raw,  # type: ignore[arg-type]
            upstream=options,
        )
        return raw, proxy

    yield make
    for raw in started:
        await raw.close()


async def fetch(
    proxy: Proxy, method: str = "GET", path: str = "/fabrikam/_apis/x", **kw: Any
) -> tuple[int, CIMultiDict[str], bytes]:
    headers = {**proxy.auth, **kw.pop("headers", {})}
    async with (
        aiohttp.ClientSession(auto_decompress=False) as s,
        s.request(method, proxy.url + path, headers=headers, **kw) as r,
    ):
        return r.status, r.headers.copy(), await r.read()


def bad_response(status: int, headers: CIMultiDict[str], body: bytes) -> str:
    """The reason of a gateway 502 (asserting it is the gateway's JSON error)."""
    assert status == 502, body
    assert headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["source"] == "azdo-gateway"
    reason: str = doc["reason"]
    return reason


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
BAD_ANSWERS = {
    "content-length and chunked": HEAD
    + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    "conflicting content-lengths": HEAD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "content-length list": HEAD + b"Content-Length: 2, 2\r\n\r\nab",
    "signed content-length": HEAD + b"Content-Length: +2\r\n\r\nab",
    "bad chunk size": HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "chunk without its CRLF": HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
    "transfer coding other than chunked": HEAD
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    "stray bytes after the answer": OK + b"garbage after the body",
    "status 000": b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
    "status 099": b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
    "status 600": b"HTTP/1.1 600 High\r\nContent-Length: 0\r\n\r\n",
    "status 999": b"HTTP/1.1 999 High\r\nContent-Length: 0\r\n\r\n",
    "switching protocols": b"HTTP/1.1 101 Switching\r\nUpgrade: websocket\r\n"
    b"Connection: upgrade\r\n\r\n",
    "320 KB of headers": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 8000) for i in range(40))
    + b"Content-Length: 0\r\n\r\n",
    "one header line over 8 KiB": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "space before the colon": HEAD + b"Content-Length : 2\r\n\r\nab",
    "NUL in a header value": HEAD + b"X-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n",
    "body shorter than its length": [HEAD + b"Content-Length: 100\r\n\r\n{}", CLOSE],
    "closed before answering": [CLOSE],
    "closed mid-head": [b"HTTP/1.1 200 OK\r\nContent-Le", CLOSE],
}


@pytest.mark.parametrize("name", list(BAD_ANSWERS))
async def test_broken_answer_is_502_and_its_connection_discarded(
    make_raw: MakeRaw, name: str
) -> None:
    # POST: never resent, so the broken answer is the one the client hears about.
    raw, proxy = await make_raw([[BAD_ANSWERS[name]]])
    status, headers, body = await fetch(proxy, "POST", data=b"{}")
    assert bad_response(status, headers, body) == "bad_upstream_response"
    assert b"garbage" not in body
    status, _, body = await fetch(proxy)
    assert (status, body) == (200, b'{"next": true}')
    assert raw.connections == 2  # the next request did not get the broken connection
    assert [len(r) for r in raw.requests] == [1, 1]


async def test_second_client_gets_its_own_answer_after_stray_bytes_on_an_idle_connection(
    make_raw: MakeRaw,
) -> None:
    """Upstream answers, then (while the connection sits idle in the pool) sends a
    second, unsolicited answer: the next client must never be given it."""
    stray_sent = asyncio.Event()
    go = asyncio.Event()
    first = answer(200, b'{"first": 1}', "Content-Type: application/json")
    stray = answer(404, b'{"stray": 1}', "Content-Type: application/json", "X-Stray: 1")
    raw, proxy = await make_raw([[[first, Wait(go), stray, Sent(stray_sent)]]])
    assert (await fetch(proxy))[2] == b'{"first": 1}'
    go.set()
    await stray_sent.wait()
    for _ in range(3):  # whichever connection it lands on, each client gets its own answer
        status, headers, body = await fetch(proxy)
        assert (status, body) == (200, b'{"next": true}')
        assert "X-Stray" not in headers
    assert raw.connections == 2


async def test_second_answer_in_the_same_write_never_reaches_anyone(make_raw: MakeRaw) -> None:
    first = answer(200, b'{"first": 1}', "Content-Type: application/json")
    stray = answer(404, b'{"stray": 1}', "X-Stray: 1")
    raw, proxy = await make_raw([[first + stray]])
    status, headers, body = await fetch(proxy)
    assert (status, body) == (200, b'{"first": 1}') and "X-Stray" not in headers
    status, headers, body = await fetch(proxy)
    assert (status, body) == (200, b'{"next": true}') and "X-Stray" not in headers
    assert raw.connections == 2


async def test_trailers_are_never_merged_into_the_headers(make_raw: MakeRaw) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum, Set-Cookie\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nSet-Cookie: session=stolen\r\n\r\n"
    )
    _, proxy = await make_raw([[chunked]])
    status, headers, body = await fetch(proxy)
    assert (status, body) == (200, b"hello")
    assert not {"x-checksum", "set-cookie", "trailer"} & {name.lower() for name in headers}


STREAM = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
CHUNKED = STREAM + b"Transfer-Encoding: chunked\r\n\r\n7530\r\n" + b"x" * 30000 + b"\r\n"


@pytest.mark.parametrize(
    "start, end",
    [
        (STREAM + b"Content-Length: 100000\r\n\r\n" + b"x" * 30000, CLOSE),
        (CHUNKED, CLOSE),
        (CHUNKED, b"zz\r\n"),
        (CHUNKED, b"10\r\nshort\r\n0\r\n\r\n"),
    ],
    ids=["short body", "chunked cut", "bad chunk mid-body", "chunk shorter than its size"],
)
async def test_body_broken_after_the_headers_cuts_the_client_connection(
    make_raw: MakeRaw, start: bytes, end: Any
) -> None:
    """The status line is out: the client must see a cut connection, never an
    answer that looks whole (no last chunk, fewer bytes than Content-Length)."""
    relayed = asyncio.Event()
    _, proxy = await make_raw([[[start, Wait(relayed), end]]])
    host, port = proxy.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = proxy.auth["Authorization"]
    writer.write(
        f"GET /fabrikam/_apis/x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    relayed.set()  # the client has the headers: now upstream breaks the body
    body = await asyncio.wait_for(reader.read(), 10)  # until the gateway cuts the connection
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x" * 1000 in body and len(body) < 100000
    assert not body.endswith(b"0\r\n\r\n") and b"azdo-gateway" not in body


async def test_short_json_body_is_502_before_anything_is_relayed(make_raw: MakeRaw) -> None:
    """An answer the rewriter buffers is checked whole before the client hears of it."""
    short = [HEAD + b"Content-Length: 50\r\n\r\n" + b'{"url": "x"', CLOSE]
    _, proxy = await make_raw([[short]])
    assert bad_response(*await fetch(proxy, "POST", data=b"{}")) == "bad_upstream_response"


async def test_interim_answers_dripping_do_not_hold_off_the_read_timeout(
    make_raw: MakeRaw,
) -> None:
    """`100 Continue` every 0.2 s keeps bytes coming, but the final answer must
    come within read_timeout_s (0.5 s) of the request."""
    drip = [b"HTTP/1.1 100 Continue\r\n\r\n", Pause(0.2)] * 15 + [OK]
    _, proxy = await make_raw([[drip]], read_timeout_s=0.5)
    status, headers, body = await fetch(proxy)
    assert status == 504
    assert json.loads(body)["reason"] == "upstream_timeout"


async def test_the_read_timeout_starts_once_the_request_body_is_sent(make_raw: MakeRaw) -> None:
    """An upload that takes longer than read_timeout_s (0.5 s) is answered; an answer
    that then takes longer than read_timeout_s is a 504."""

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(4):
            await asyncio.sleep(0.25)
            yield b"{}"

    late = [Pause(0.8), OK]
    _, proxy = await make_raw([[OK, late]], read_timeout_s=0.5)
    status, _, body = await fetch(proxy, "POST", data=slow())
    assert (status, body) == (200, b"{}")
    status, _, body = await fetch(proxy, "POST", data=slow())
    assert status == 504
    assert json.loads(body)["reason"] == "upstream_timeout"


async def test_interim_answers_are_skipped(make_raw: MakeRaw) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    _, proxy = await make_raw([[interim + OK]])
    status, headers, body = await fetch(proxy)
    assert (status, body) == (200, b"{}") and "Link" not in headers


async def test_head_and_bodyless_statuses_end_at_their_headers(make_raw: MakeRaw) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nContent-Type: application/zip\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    not_modified = b'HTTP/1.1 304 Not Modified\r\nETag: "1"\r\n\r\n'
    raw, proxy = await make_raw([[head, no_content, not_modified]])
    status, headers, body = await fetch(proxy, "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "12345", b"")
    assert (await fetch(proxy))[::2] == (204, b"")
    status, headers, body = await fetch(proxy)
    assert (status, headers["ETag"], body) == (304, '"1"', b"")
    assert (await fetch(proxy))[::2] == (200, b'{"next": true}')
    assert raw.connections <= 2  # HEAD may close its connection; the others keep it


async def test_gzip_bomb_is_relayed_compressed_never_inflated(make_raw: MakeRaw) -> None:
    bomb = gzip.compress(b"[" + b" " * (64 << 20) + b"]", compresslevel=9)
    for content_type in ("application/octet-stream", "application/json"):
        gz = answer(200, bomb, f"Content-Type: {content_type}", "Content-Encoding: gzip")
        _, proxy = await make_raw([[gz]], then=gz)
        status, headers, body = await fetch(proxy)
        assert (status, headers["Content-Encoding"]) == (200, "gzip")
        assert body == bomb  # the client gets the compressed bytes, not 64 MiB


async def test_early_answer_during_an_upload_ends_it_and_drops_the_connection(
    make_raw: MakeRaw,
) -> None:
    early = answer(409, b'{"message": "conflict"}', "Content-Type: application/json")
    raw, proxy = await make_raw([[Early(early)]])
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(400):  # 40 MB, far more than the socket buffers hold
            sent += 100_000
            yield b"u" * 100_000

    status, _, data = await fetch(proxy, "PUT", data=body())
    assert (status, data) == (409, b'{"message": "conflict"}')
    await asyncio.wait_for(raw.closed[0].wait(), 10)  # the upload's connection was dropped
    assert sent < 40_000_000
    assert (await fetch(proxy))[::2] == (200, b'{"next": true}')
    assert raw.connections == 2


async def test_idempotent_request_is_resent_once_on_a_connection_closed_while_idle(
    make_raw: MakeRaw,
) -> None:
    """Upstream keeps the connection alive, then closes it as the next request
    arrives (no byte answered): a GET goes again on a new connection."""
    raw, proxy = await make_raw([[OK, [CLOSE]]])
    assert (await fetch(proxy))[::2] == (200, b"{}")
    assert (await fetch(proxy))[::2] == (200, b'{"next": true}')
    assert [len(r) for r in raw.requests] == [2, 1]
    assert all(r.startswith(b"GET ") for conn in raw.requests for r in conn)


@pytest.mark.parametrize(
    "method, data",
    [("POST", None), ("POST", b'{"a": 1}'), ("PATCH", b'[{"op": "add"}]')],
    ids=["POST without body", "POST", "PATCH"],
)
async def test_non_idempotent_request_is_never_resent(
    make_raw: MakeRaw, method: str, data: bytes | None
) -> None:
    raw, proxy = await make_raw([[OK, [CLOSE]]])
    assert (await fetch(proxy))[::2] == (200, b"{}")
    status, headers, body = await fetch(proxy, method, data=data)
    assert bad_response(status, headers, body) == "bad_upstream_response"
    assert raw.connections == 1
    [_, sent] = raw.requests[0]
    assert sent.startswith(method.encode() + b" ")


async def test_upstream_sees_exactly_the_cleaned_headers(make_raw: MakeRaw) -> None:
    raw, proxy = await make_raw([[OK, OK]])
    await fetch(proxy, "GET", headers={"Accept": "application/json"})
    await fetch(proxy, "POST", data=b"{}")
    get, post = (r.decode("latin-1").split("\r\n\r\n")[0] for r in raw.requests[0])
    names = {line.split(":")[0].lower() for line in get.split("\r\n")[1:]}
    assert names == {
        "host", "accept", "accept-encoding", "user-agent", "authorization",
        "x-tfs-fedauthredirect", "x-request-id", "x-tfs-session",
    }  # fmt: skip
    assert "Python/" in get and "aiohttp" in get  # the *client's* User-Agent, relayed
    names = {line.split(":")[0].lower() for line in post.split("\r\n")[1:]}
    assert "content-type" in names and "content-length" in names  # the client's own
    assert "transfer-encoding" not in names


async def test_connections_per_host_are_bounded(make_raw: MakeRaw) -> None:
    go = asyncio.Event()
    raw, proxy = await make_raw([], then=[Wait(go), OK], max_connections_per_host=2)
    calls = [asyncio.ensure_future(fetch(proxy)) for _ in range(6)]
    await raw.wait_requests(2)
    go.set()
    assert [(s, b) for s, _, b in await asyncio.gather(*calls)] == [(200, b"{}")] * 6
    assert raw.connections == 2


async def test_the_credential_echoed_in_a_repeated_header_is_dropped(make_raw: MakeRaw) -> None:
    """Upstream echoing the injected credential in two fields of one name: the answer
    goes out without either (and without the credential anywhere), not as a 500."""
    echo = answer(
        200,
        b'{"ok": true}',
        "Content-Type: application/json",
        f"X-Echo: {PAT}",
        f"x-echo: Basic {PAT}",
        "X-Kept: yes",
    )
    _, proxy = await make_raw([[echo]])
    status, headers, body = await fetch(proxy)
    assert status == 200, body
    assert "X-Echo" not in headers
    assert headers["X-Kept"] == "yes"
    assert PAT not in str(headers)
    assert json.loads(body) == {"ok": True}
