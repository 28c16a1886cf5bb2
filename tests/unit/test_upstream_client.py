"""The upstream HTTP/1.1 client against scripted raw servers on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from gateway.proxy import client as upstream_client
from gateway.proxy.client import BadResponse, ConnectFailed, Origin, UpstreamPool

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Server:
    """A loopback TCP server that runs `script` for every connection it accepts."""

    def __init__(self, script: Script | None) -> None:
        self.script = script or self.always_ok
        self.connections = 0
        self.requests: list[bytes] = []  # request heads, in order
        self.tasks: set[asyncio.Task[None]] = set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the test is over
        finally:
            writer.close()

    async def always_ok(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """The default script: answer every request on the connection with OK."""
        while True:
            await self.head(r)
            w.write(OK)

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head


@asynccontextmanager
async def serving(script: Script | None = None) -> AsyncIterator[tuple[Server, Origin]]:
    server = Server(script)
    tcp = await asyncio.start_server(server._accept, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    try:
        yield server, Origin.parse(f"http://127.0.0.1:{port}")
    finally:
        tcp.close()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks)


@asynccontextmanager
async def pool(**kwargs: float) -> AsyncIterator[UpstreamPool]:
    options: dict[str, float | None] = {"connect_timeout": 5, "read_timeout": 5}
    options.update(kwargs)
    p = UpstreamPool(ssl_context=ssl.create_default_context(), **options)  # type: ignore[arg-type]
    try:
        yield p
    finally:
        await p.close()


async def fetch(p: UpstreamPool, origin: Origin, method: str = "GET", **kw: object) -> bytes:
    response = await p.request(origin, method, "/x", kw.pop("headers", ()), **kw)  # type: ignore[arg-type]
    try:
        return b"".join([chunk async for chunk in response.chunks()])
    finally:
        response.release()


def test_origin_gives_the_host_header_and_path_prefix() -> None:
    assert Origin.parse("https://dev.azure.com") == Origin(
        True, "dev.azure.com", 443, "dev.azure.com", ""
    )
    o = Origin.parse("http://tfs.contoso.com:8080/tfs/")
    assert (o.port, o.host_header, o.prefix) == (8080, "tfs.contoso.com:8080", "/tfs")
    assert Origin.parse("http://[::1]:81").host_header == "[::1]:81"


async def test_keep_alive_connection_is_reused() -> None:
    async with serving() as (server, origin), pool() as p:
        assert [await fetch(p, origin) for _ in range(3)] == [b"ok"] * 3
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_connection_closed_while_idle_is_replaced_once() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(OK)
        await w.drain()
        # keep-alive promised, but the server drops the connection: when the
        # next request arrives on it, it is read and the connection closed.
        await r.read(1)

    async with serving(script) as (server, origin), pool() as p:
        assert await fetch(p, origin) == b"ok"
        assert await fetch(p, origin) == b"ok"
    assert server.connections == 2  # the second request went to the stale one, then anew
    assert len(server.requests) == 2


async def test_fresh_connection_closed_without_answer_is_bad_response() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)

    async with serving(script) as (server, origin), pool() as p:
        with pytest.raises(BadResponse, match="without an answer"):
            await fetch(p, origin)


async def test_head_answer_ends_at_its_headers() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await server.head(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")

    async with serving(script) as (server, origin), pool(read_timeout=2) as p:
        assert await fetch(p, origin, "HEAD") == b""
        assert await fetch(p, origin, "HEAD") == b""
    assert server.connections == 2  # never reused after HEAD: no body to skip by guess


async def test_interim_answers_are_skipped() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        w.write(b"HTTP/1.1 201 Created\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok")
        await r.read(1)

    async with serving(script) as (server, origin), pool() as p:
        response = await p.request(origin, "GET", "/x", ())
        assert (response.status, response.reason) == (201, "Created")
        assert "Link" not in response.headers and response.headers["X-Final"] == "1"
        assert b"".join([c async for c in response.chunks()]) == b"ok"
        response.release()


async def test_body_delimited_by_close_is_read_to_the_end() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 100_000)

    async with serving(script) as (server, origin), pool() as p:
        assert await fetch(p, origin) == b"z" * 100_000
        assert await fetch(p, origin) == b"z" * 100_000
    assert server.connections == 2


async def test_chunked_answer_is_decoded_and_truncated_one_fails() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n")
        if len(server.requests) == 1:
            w.write(b"0\r\n\r\n")
            await server.head(r)

    async with serving(script) as (server, origin), pool() as p:
        assert await fetch(p, origin) == b"abcde"
        with pytest.raises(BadResponse, match="mid-answer"):
            await fetch(p, origin)


async def test_request_body_chunked_without_length_and_raw_with_it() -> None:
    bodies: list[bytes] = []

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head = await server.head(r)
            if b"transfer-encoding: chunked" in head.lower():
                data = b""
                while (size := int((await r.readline()).strip(), 16)) > 0:
                    data += await r.readexactly(size)
                    await r.readline()
                await r.readline()
            else:
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                data = await r.readexactly(length)
            bodies.append(data)
            w.write(OK)

    async def body() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b""
        yield b"world"

    async with serving(script) as (server, origin), pool() as p:
        await fetch(p, origin, "POST", body=body())
        await fetch(p, origin, "POST", headers=[("Content-Length", "11")], body=body())
    assert bodies == [b"hello world", b"hello world"]
    assert b"Transfer-Encoding: chunked" in server.requests[0]
    assert b"Transfer-Encoding" not in server.requests[1]


async def test_header_with_line_break_is_refused_before_sending() -> None:
    async with serving() as (server, origin), pool() as p:
        for bad in ("a\r\nX-Injected: 1", "a\nb", "a\rb"):
            with pytest.raises(ValueError, match="CR or LF"):
                await p.request(origin, "GET", "/x", [("X-Ok", "1"), ("X-Bad", bad)])
    assert server.connections == 0


async def test_no_answer_in_time_is_timeout_before_and_during_the_body() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        if len(server.requests) == 2:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await r.read(1)

    async with serving(script) as (server, origin), pool(read_timeout=0.2) as p:
        with pytest.raises(TimeoutError):
            await fetch(p, origin)
        response = await p.request(origin, "GET", "/x", ())
        with pytest.raises(TimeoutError):
            async for _ in response.chunks():
                pass
        response.release()


async def test_unread_answer_stops_reading_from_upstream() -> None:
    size = 32 << 20  # more than loopback's socket buffers hold
    sent = asyncio.Event()

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"q" * size)
        await w.drain()
        sent.set()

    async with serving(script) as (server, origin), pool() as p:
        response = await p.request(origin, "GET", "/x", ())
        conn = response._conn
        while not conn.read_paused:
            await conn.wait(5)
        assert conn.buffered <= upstream_client.HIGH_WATER + 256 * 1024
        assert not sent.is_set()  # the rest waits in the socket buffers
        got = sum([len(c) async for c in response.chunks()])
        response.release()
    assert got == size


async def test_early_answer_stops_the_upload_and_drops_the_connection() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        await r.read(1)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536

    async with serving(script) as (server, origin), pool() as p:
        response = await p.request(origin, "PUT", "/x", [("Content-Length", "99999999")], endless())
        assert response.status == 413
        writer = response._writer
        assert writer is not None
        response.release()
        assert response._conn.closed
        with pytest.raises(asyncio.CancelledError):
            await writer


async def test_body_failure_before_the_answer_is_raised_as_it_is() -> None:
    class Broken(Exception):
        pass

    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        await r.read()

    async def body() -> AsyncIterator[bytes]:
        yield b"x"
        raise Broken("client went away")

    async with serving(script) as (server, origin), pool() as p:
        with pytest.raises(Broken):
            await p.request(origin, "POST", "/x", (), body())


async def test_refused_connection_is_connect_failed() -> None:
    async with serving() as (_, origin):
        pass  # closed again: nothing listens on that port now
    async with pool() as p:
        with pytest.raises(ConnectFailed) as info:
            await fetch(p, origin)
    assert not info.value.certificate


async def test_idle_connections_expire() -> None:
    async with serving() as (server, origin), pool() as p:
        await fetch(p, origin)
        [conn] = p._idle[origin]
        conn.idle_since -= p.keepalive_s
        p._expire_idle()
        assert p._idle[origin] == [] and conn.closed
        await fetch(p, origin)
    assert server.connections == 2


async def test_endless_headers_are_a_bad_response() -> None:
    async def script(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await server.head(r)
        w.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):
            w.write(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100))
            await w.drain()

    async with serving(script) as (server, origin), pool() as p:
        with pytest.raises(BadResponse, match="headers larger than 256 KiB"):
            await fetch(p, origin)
