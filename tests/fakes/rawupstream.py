"""A scriptable raw-socket upstream: it sends exactly the bytes a test gives it.

`RawUpstream(script)` listens on 127.0.0.1 (port 0). `script` is a list per
connection (the first connection accepted takes the first list, and so on) of
answers, one per request read on that connection; connections past the list
take `then` (by default: one `OK` per request). An answer is `bytes`, sent as
they are in one write, or a sequence of steps:

    b"..."             sent as it is (one write)
    Wait(event)        wait until the test sets the asyncio.Event
    Sent(event)        set the asyncio.Event (everything before it has been written)
    Pause(seconds)     a gap in what upstream sends (for timeouts, never to synchronise)
    CLOSE              close the connection (nothing more is read or sent)

Before answering, the request's head is read, and its body too (by
Content-Length, or chunk by chunk) unless the answer is `Early(...)`, which
answers right after the head, then reads and drops whatever else comes. After
its last answer a connection stays open until the gateway closes it; a request
past the script is answered by `then`.

What arrived is recorded: `requests[conn]` holds each request (head and body
bytes) read on connection `conn`, `connections` counts connections accepted,
`closed[conn]` is set once that connection ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.fakes.loopback import LoopbackServer


@dataclass(frozen=True)
class Wait:
    event: asyncio.Event


@dataclass(frozen=True)
class Sent:
    event: asyncio.Event


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Early:
    """Answer as soon as the request's head is in, without reading its body."""

    answer: bytes | Sequence[Step]


class _Close:
    def __repr__(self) -> str:
        return "CLOSE"


CLOSE = _Close()
Step = bytes | Wait | Sent | Pause | _Close
Answer = bytes | Sequence[Step] | Early

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def answer(status: int = 200, body: bytes = b"{}", *headers: str) -> bytes:
    """A well-formed answer with Content-Length, plus any raw header lines."""
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class RawUpstream(LoopbackServer):
    script: list[list[Answer]] = field(default_factory=list)
    then: Answer = OK
    connections: int = 0
    requests: list[list[bytes]] = field(default_factory=list)
    closed: list[asyncio.Event] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on every request read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self.requests.append([])
        self.closed.append(asyncio.Event())
        answers = list(self.script[index]) if index < len(self.script) else []
        with self._tracked():
            try:
                while True:
                    plan = answers.pop(0) if answers else self.then
                    early = isinstance(plan, Early)
                    request = await _read_request(reader, body=not early)
                    if request is None:
                        break
                    self.requests[index].append(request)
                    self.arrived.set()
                    steps = plan.answer if isinstance(plan, Early) else plan
                    if not await _send(writer, steps):
                        break
                    if early:  # as a server that answered early: the rest is read and dropped
                        while await reader.read(1 << 16):
                            pass
                        break
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
                self.closed[index].set()

    async def wait_requests(self, n: int) -> None:
        """Until `n` requests (on all connections together) have arrived."""
        while sum(len(r) for r in self.requests) < n:
            self.arrived.clear()
            await self.arrived.wait()


async def _send(writer: asyncio.StreamWriter, steps: bytes | Sequence[Step]) -> bool:
    """Play one answer; False once the connection is to be closed."""
    for step in [steps] if isinstance(steps, bytes) else steps:
        if isinstance(step, bytes):
            writer.write(step)
            await writer.drain()
        elif isinstance(step, Wait):
            await step.event.wait()
        elif isinstance(step, Sent):
            step.event.set()
        elif isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
        else:
            return False
    return True


async def _read_request(reader: asyncio.StreamReader, *, body: bool) -> bytes | None:
    """One request's head (and body), or None when the connection ended first."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if not body:
        return head
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        data = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            data += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                data += await reader.readuntil(b"\r\n")  # no trailers from aiohttp
                return head + data
            data += await reader.readexactly(size + 2)
    length = int(fields.get("content-length", "0") or 0)
    return head + (await reader.readexactly(length) if length else b"")
