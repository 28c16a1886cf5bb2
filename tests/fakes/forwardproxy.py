"""An egress proxy on loopback: CONNECT tunnels and absolute-form forwarding.

`ForwardProxy(credentials="user:password")` listens on 127.0.0.1 (port 0).
A request `CONNECT host:port` gets `200 Connection established` and a byte
tunnel to that address (HTTPS through the proxy); a request in absolute form
(`GET http://host:port/path HTTP/1.1`, plain HTTP through the proxy) opens a
connection to that host and relays the bytes both ways, the request head
included without its `Proxy-*` headers (aiohttp's server takes absolute-form
targets). With `credentials`
set, a request without the matching `Proxy-Authorization: Basic ...` is
answered 407 and the connection closed.

`seen` holds each request line the proxy received (`CONNECT 127.0.0.1:4431`,
`GET http://127.0.0.1:8080/x`), `authorizations` the Proxy-Authorization
values (None when absent), in order. The proxy never loops back to itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tests.fakes.loopback import LoopbackServer

# How a connection may end: the peer went away, sent garbage, or the proxy closed.
_ENDED = (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ValueError)


@dataclass
class ForwardProxy(LoopbackServer):
    credentials: str | None = None  # "user:password" the proxy demands
    seen: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)

    def url(self, userinfo: str | None = None) -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._tracked():
            try:
                await self._serve(reader, writer)
            except (
                ConnectionError,
                asyncio.IncompleteReadError,
                asyncio.CancelledError,
                ValueError,
            ):
                pass
            finally:
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        self.seen.append(f"{method} {target}")
        auth = fields.get("proxy-authorization")
        self.authorizations.append(auth)
        if self.credentials is not None:
            expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
            if auth != expected:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="egress"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            first = b""
        else:
            url = urlsplit(target)
            assert url.hostname is not None and url.port != self.port
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            kept = [line for line in lines if not line.lower().startswith("proxy-")]
            first = "\r\n".join(kept).encode("latin-1")  # as a proxy does: its own headers go
        try:
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
