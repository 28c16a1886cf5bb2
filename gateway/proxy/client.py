"""The upstream HTTP/1.1 client: one keep-alive connection pool per process.

`UpstreamPool.request(origin, method, target, headers, body)` sends one
request and returns an `UpstreamResponse` once the status line and headers
have arrived; its body is read with `chunks()` and the response is finished
with `release()` (back to the pool when whole and reusable, closed otherwise).
Responses are parsed by llhttp (through httptools); bodies are passed on as
they arrive, never decoded, never held whole.

Flow control both ways: the request body is written no faster than upstream
takes it (`pause_writing`), and the response body stops being read from the
socket while more than `HIGH_WATER` bytes wait for the client.

Failures are `ConnectFailed` (refused, DNS, TLS; `.certificate` when the
certificate was not trusted), `BadResponse` (not HTTP, or the connection
ended early) and `TimeoutError` (connect timeout, or no byte from upstream
for `read_timeout` seconds). A request body's own exception (the client's
side broke, or it is too large) is raised as it is.

Why not aiohttp's ClientSession: it does much a proxy does not need (cookies,
redirects, decompression, tracing, auto headers) on every request, and it
costs more CPU per request than the rest of the gateway's pipeline together.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

HIGH_WATER = 256 * 1024  # response bytes buffered before reading from upstream pauses
LOW_WATER = 64 * 1024  # ... and resumes
MAX_IDLE_PER_ORIGIN = 256  # idle keep-alive connections kept per origin
MAX_HEAD_BYTES = 256 * 1024  # status line and headers (with any interim answers) of one answer
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UpstreamFailure(Exception):
    """Talking to upstream failed."""


class ConnectFailed(UpstreamFailure):
    """No connection: refused, name not resolved, or the TLS handshake failed."""

    def __init__(self, message: str, *, certificate: bool = False) -> None:
        super().__init__(message)
        self.certificate = certificate


class BadResponse(UpstreamFailure):
    """The answer is not valid HTTP/1.1, or the connection ended before it did."""


class _Stale(Exception):
    """A reused keep-alive connection was closed by upstream before it answered."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one configured upstream host is: scheme, address, Host header, path prefix."""

    tls: bool
    host: str
    port: int
    host_header: str
    prefix: str  # path of the configured URL, without a trailing slash

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        url = URL(base_url)
        if url.scheme not in _DEFAULT_PORTS or not url.host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        host = url.raw_host or url.host
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == _DEFAULT_PORTS[url.scheme] else f"{shown}:{port}"
        return cls(url.scheme == "https", host, port, header, url.raw_path.rstrip("/"))


class _Connection(asyncio.Protocol):
    """One connection to upstream, and the state of the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        # llhttp starts over after each whole answer: one parser serves the
        # connection's life (it is never reused after HEAD or an error).
        self._parser = httptools.HttpResponseParser(self)
        self.busy = False  # an exchange is under way
        self._reset(head_only=False)

    def _reset(self, *, head_only: bool) -> None:
        self.head_only = head_only
        self.got_bytes = False
        self.head_bytes = 0
        self.status = 0
        self.reason = b""
        self.header_list: list[tuple[str, str]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.until_close = False  # body ends when the connection does
        self.error: BaseException | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.read_paused = False
        self.waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes while idle in the pool: the connection is unusable
            self.close()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(BadResponse("switched protocols"))
        except httptools.HttpParserError as err:
            self.fail(BadResponse(f"not HTTP/1.1: {err}"))
        else:
            if not self.head_done:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:  # llhttp itself would take any size
                    self.fail(BadResponse(f"headers larger than {MAX_HEAD_BYTES // 1024} KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.complete and self.error is None:
            if self.head_done and self.until_close and exc is None:
                self.complete = True  # a body delimited by the end of the connection
            elif not self.got_bytes:
                self.error = _Stale("closed before answering")
            else:
                self.error = BadResponse("connection closed mid-answer")
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- llhttp callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        self.header_list = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_list.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self.reason = b""
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.head_done = True
        if self.head_only or status in (204, 304):
            self.complete = True
        else:
            names = {name.lower() for name, _ in self.header_list}
            self.until_close = "content-length" not in names and "transfer-encoding" not in names
        self._wake()

    def on_body(self, chunk: bytes) -> None:
        if self.complete:  # a body after HEAD's headers: never reuse this connection
            self.keep_alive = False
            return
        self.body.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an interim answer
            return
        self.complete = True
        self._wake()

    # --- used by the pool and the response -----------------------------------

    def start(self, head_only: bool) -> None:
        self._reset(head_only=head_only)
        self.busy = True

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        """Stop this exchange with `error` and drop the connection."""
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    async def wait(self, idle_s: float | None) -> None:
        """Until something happens on this connection; TimeoutError after `idle_s` seconds."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(idle_s, _expire, waiter) if idle_s else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drained = self.loop.create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def take_body(self) -> bytes:
        chunk = self.body.popleft() if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.closed
            and not self.head_only
        )


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamResponse:
    """Status and headers of upstream's answer; the body follows through `chunks()`."""

    __slots__ = ("_conn", "_pool", "_origin", "_writer", "headers", "reason", "status")

    def __init__(
        self,
        pool: UpstreamPool,
        origin: Origin,
        conn: _Connection,
        writer: asyncio.Task[None] | None,
    ) -> None:
        self._pool, self._origin, self._conn, self._writer = pool, origin, conn, writer
        self.status = conn.status
        self.reason = conn.reason.decode("latin-1")
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(conn.header_list))

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    def body_if_whole(self) -> bytes | None:
        """The whole body, when all of it has arrived already; None while more is due."""
        conn = self._conn
        if conn.complete and conn.error is None:
            return conn.take_body() if conn.body else b""
        return None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (adjacent pieces joined); ends when it is whole."""
        conn = self._conn
        timeout = self._pool.read_timeout
        while True:
            if conn.body:
                yield conn.take_body()
            elif conn.error is not None:
                raise _public(conn.error)
            elif conn.complete:
                return
            else:
                await conn.wait(timeout)

    def release(self) -> None:
        """Done with this answer: the connection goes back to the pool or is closed."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()  # upstream answered before taking the whole body
            self._conn.close()
        self._pool.put(self._origin, self._conn)


def _public(error: BaseException) -> BaseException:
    return BadResponse("connection closed") if isinstance(error, _Stale) else error


class UpstreamPool:
    """Keep-alive connections to each upstream origin, most recently used first."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        connect_timeout: float | None,
        read_timeout: float | None,
        keepalive_s: float = 30.0,
    ) -> None:
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_s = keepalive_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: AsyncIterable[bytes] | None = None,
    ) -> UpstreamResponse:
        """Send the request; return once upstream's status line and headers are in.

        `headers` are sent as given, after `Host`; with a body and no
        Content-Length among them, the body is sent chunked. A request
        without a body that meets a keep-alive connection upstream closed
        while idle goes on the next pooled connection, or a new one.
        """
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        chunked = body is not None
        for name, value in headers:
            lines.append(f"{name}: {value}\r\n")
            if chunked and name.lower() == "content-length":
                chunked = False
        if chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        lines.append("\r\n")
        head = "".join(lines)
        # SECURITY: one line per header; a CR or LF inside a value would smuggle
        # another header (or request) upstream. (The first item holds two lines.)
        if head.count("\n") != len(lines) + 1 or head.count("\r") != len(lines) + 1:
            raise ValueError("header names and values must not contain CR or LF")
        data = head.encode("utf-8", "surrogateescape")
        head_only = method == "HEAD"
        while True:
            conn, reused = await self._get(origin)
            try:
                return await self._exchange(origin, conn, data, body, chunked, head_only)
            except _Stale:
                if not reused:
                    raise BadResponse("connection closed without an answer") from None
                # a connection upstream had closed while idle: once more, on another

    async def _exchange(
        self,
        origin: Origin,
        conn: _Connection,
        head: bytes,
        body: AsyncIterable[bytes] | None,
        chunked: bool,
        head_only: bool,
    ) -> UpstreamResponse:
        conn.start(head_only)
        assert conn.transport is not None
        writer: asyncio.Task[None] | None = None
        try:
            conn.transport.write(head)
            if body is not None:
                writer = conn.loop.create_task(_send_body(conn, body, chunked))
                writer.add_done_callback(lambda task: _writer_done(conn, task))
            while not conn.head_done:
                if conn.error is not None:
                    error = conn.error
                    if isinstance(error, _Stale) and writer is not None:
                        error = BadResponse("connection closed without an answer")
                    raise error
                await conn.wait(self.read_timeout)
        except BaseException:
            if writer is not None:
                writer.cancel()
            conn.close()
            raise
        return UpstreamResponse(self, origin, conn, writer)

    async def _get(self, origin: Origin) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn, True
            conn.close()
        return await self._connect(origin), False

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self.ssl_context if origin.tls else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except ssl.SSLCertVerificationError as err:
            raise ConnectFailed(err.verify_message or "certificate", certificate=True) from None
        except ssl.SSLError as err:
            raise ConnectFailed(f"TLS: {err.reason or err}") from None
        except OSError as err:
            raise ConnectFailed(err.strerror or type(err).__name__) from None
        return conn

    def put(self, origin: Origin, conn: _Connection) -> None:
        if not conn.reusable():
            conn.close()
            return
        conn.busy = False
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin, [])
        idle.append(conn)
        if len(idle) > MAX_IDLE_PER_ORIGIN:
            idle.pop(0).close()
        if self._sweep is None:
            self._sweep = conn.loop.call_later(self.keepalive_s, self._expire_idle)

    def _expire_idle(self) -> None:
        """Close connections idle longer than `keepalive_s` (they are the oldest)."""
        self._sweep = None
        now = time.monotonic()
        left = False
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive_s):
                idle.pop(0).close()
            left = left or bool(idle)
        if left:
            loop = asyncio.get_running_loop()
            self._sweep = loop.call_later(self.keepalive_s, self._expire_idle)

    async def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _send_body(conn: _Connection, body: AsyncIterable[bytes], chunked: bool) -> None:
    transport = conn.transport
    assert transport is not None
    async for chunk in body:
        if conn.closed:
            return
        if not chunk:
            continue
        if chunked:
            transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
        else:
            transport.write(chunk)
        await conn.drain()
    if chunked and not conn.closed:
        transport.write(b"0\r\n\r\n")


def _writer_done(conn: _Connection, task: asyncio.Task[None]) -> None:
    """A request body that failed (too large, the client's side broke) ends the exchange:
    with its own error while upstream has not answered, as a broken answer after."""
    if task.cancelled() or (error := task.exception()) is None:
        return
    if conn.head_done:
        error = BadResponse(f"the request body failed while upstream answered: {error}")
    conn.fail(error)
