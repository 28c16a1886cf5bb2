"""The process's one HTTP client toward Azure DevOps, and what its failures mean.

`open_session(upstream)` builds the worker's aiohttp `ClientSession`: a
`TCPConnector` bounded by `upstream.max_connections` (and per host), TLS
verified against the system store plus `upstream.ca_file`, no cookie jar, no
decompression, no header of its own beyond `Host` and the body framing.
`timeouts(upstream)` are the per-request `ClientTimeout` (so a reload's new
values apply to the next request). HTTP/1.1 framing, keep-alive reuse, the
retry of an idempotent request on a kept-alive connection upstream had closed,
and the egress proxy are aiohttp's.

What aiohttp accepts but a proxy must not relay raises `BadUpstreamResponse`
and closes the connection (`check`): a status outside 100-599, a protocol
switch, a head over `MAX_HEAD_BYTES`, a header name that is not a token, a
transfer coding other than chunked. A kept-alive connection on which upstream
sent anything while it sat idle (a second, unsolicited answer) is never used
again (`_Request`).

`translate(err, host)` is the one place where the client's exceptions become
the gateway's: a timeout is 504 `upstream_timeout`; a failed connection
(refused, DNS, TLS, the egress proxy) is 502 `upstream_unreachable`; an answer
that is not valid HTTP/1.1 or ends early is 502 `bad_upstream_response`; a
client body that could not be read is 400. Gateway errors pass unchanged.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Any

import aiohttp

from gateway.config.model import Upstream
from gateway.errors import BadRequest, GatewayError, UpstreamError, UpstreamTimeout
from gateway.memo import Memo

# Status line and headers of the final answer. aiohttp bounds each line
# (8,190 bytes) and the number of fields (128); this bounds their sum.
MAX_HEAD_BYTES = 256 * 1024
KEEPALIVE_S = 30.0  # idle upstream connections are closed after this long
# Headers aiohttp would add on its own. The gateway sends Azure DevOps the
# client's cleaned headers and its own, nothing else: no User-Agent of
# aiohttp's, no Accept-Encoding (bodies are relayed undecoded), no
# Content-Type guessed for a streamed body.
SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
# Whether a header name upstream sent is a token, for the same few names Azure
# DevOps sends on every answer.
MAX_TOKENS_SEEN = 1024
_TOKENS_SEEN: Memo[bytes, bool] = Memo(
    lambda name: _TOKEN.fullmatch(name) is not None, size=MAX_TOKENS_SEEN
)


class BodyReadError(Exception):
    """Reading the client's request body failed (the client's fault, not upstream's)."""


class BadUpstreamResponse(aiohttp.ClientError):
    """Upstream's answer parsed, but is not one a proxy may relay."""


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """System trust store, plus `upstream.ca_file` when set."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class _Request(aiohttp.ClientRequest):
    async def send(self, conn: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        # SECURITY: bytes that upstream sent on a kept-alive connection while it
        # sat idle in the pool (an unsolicited second answer) would be taken as
        # this request's answer: another client's desync. aiohttp parses them
        # into the connection's queue; such a connection is closed instead of
        # used. An idempotent request then goes on a new one (aiohttp's retry).
        protocol = conn.protocol
        if protocol is not None and protocol.should_close:
            raise aiohttp.ServerDisconnectedError(
                "upstream sent bytes while the connection was idle"
            )
        return await super().send(conn)


class _Response(aiohttp.ClientResponse):
    _lost: asyncio.Future[None] | None = None

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        await super().start(connection)
        try:
            check(self)
        except BadUpstreamResponse:
            # An answer without a body went back to the pool inside start():
            # close its connection there too (no other request took it since).
            if protocol is not None:
                protocol.close()
            self.close()
            raise
        if protocol is not None and not self.content.is_eof():
            # aiohttp 3.14 closes the connection on a framing error in the body
            # (a bad chunk) but never tells the body's reader, which then waits
            # forever (its read timeout dropped too). Once the connection is
            # gone, a body that did not end fails.
            self._lost = protocol.closed
            if self._lost is not None:
                self._lost.add_done_callback(self._connection_lost)
        return self

    def _connection_lost(self, _: object) -> None:
        if not self.content.is_eof() and self.content.exception() is None:
            self.content.set_exception(
                aiohttp.ClientPayloadError("the connection ended inside the body")
            )

    def _unwatch(self) -> None:
        if self._lost is not None:
            self._lost.remove_done_callback(self._connection_lost)
            self._lost = None

    def release(self) -> Any:
        self._unwatch()
        return super().release()

    def close(self) -> None:
        self._unwatch()
        super().close()


def arrived(response: aiohttp.ClientResponse) -> bytes | None:
    """The whole body if it has arrived and nothing is left to wait for: what
    `await response.read()` returns, read without a turn of the event loop.
    None while some of it is to come, or the request's body is still being sent
    (read() waits for that), or reading failed (read() raises why)."""
    content = response.content
    if (
        response._body is None
        and content.is_eof()
        and content.exception() is None
        and response._writer is None
        and not response._traces
    ):
        response._body = content.read_nowait()
        return response._body
    return None


class Deadline:
    """One task's deadline, from `Deadlines.within`: a block it bounds raises
    TimeoutError once the deadline has passed."""

    __slots__ = ("_cancelling", "_owner", "expired", "task", "when")

    def __init__(self, owner: Deadlines, task: asyncio.Task[Any]) -> None:
        self._owner: Deadlines | None = owner  # None once the block has ended
        self.task = task
        self.when: float | None = None  # loop time; None: no deadline (yet)
        self.expired = False
        self._cancelling = task.cancelling()

    def reschedule(self, when: float | None) -> None:
        """Move the deadline to loop time `when` (None: no deadline). Nothing once
        it has passed or the block has ended."""
        if self._owner is not None and not self.expired:
            self.when = when
            if when is not None:
                self._owner._watch(self)

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: object
    ) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._live.discard(self)
        # The deadline's cancel() is taken back; as with asyncio.timeout, only a
        # cancel from elsewhere as well (the client gone) stays a CancelledError.
        if self.expired and self.task.uncancel() <= self._cancelling:
            if kind is asyncio.CancelledError:
                raise TimeoutError from err


class Deadlines:
    """The deadlines of the tasks of one event loop, watched by one timer.

    `with deadlines.within(delay):` bounds a block as `async with
    asyncio.timeout(delay):` does (at the deadline the task is cancelled and the
    block raises TimeoutError; a cancel from elsewhere stays a CancelledError),
    without a timer of the loop's made and cancelled per block: the one timer is
    due at the earliest deadline, and moved only for an earlier one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._live: set[Deadline] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the timer is due

    def within(self, delay: float | None) -> Deadline:
        """A deadline for the current task `delay` seconds from now (None: none
        until `Deadline.reschedule` sets one)."""
        task = asyncio.current_task(self._loop)
        assert task is not None, "a deadline bounds a task"
        deadline = Deadline(self, task)
        if delay is not None:
            deadline.reschedule(self._loop.time() + delay)
        return deadline

    def _watch(self, deadline: Deadline) -> None:
        self._live.add(deadline)
        when = deadline.when
        assert when is not None
        if self._timer is None or when < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(when)

    def _arm(self, when: float) -> None:
        self._at = when
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        # The loop runs a timer that is due within its clock's resolution: every
        # deadline up to the one the timer was set for has passed.
        due = max(self._at, self._loop.time())
        later: float | None = None
        for deadline in list(self._live):
            when = deadline.when
            if when is None:
                continue
            if when <= due:
                self._live.discard(deadline)
                deadline.expired = True
                deadline.task.cancel()
            elif later is None or when < later:
                later = when
        if later is not None:
            self._arm(later)


def open_session(upstream: Upstream) -> aiohttp.ClientSession:
    """The worker's client session (close it with the app)."""
    connector = aiohttp.TCPConnector(
        ssl=tls_context(upstream.ca_file),
        limit=upstream.max_connections,
        limit_per_host=upstream.max_connections_per_host,
        keepalive_timeout=KEEPALIVE_S,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeouts(upstream),
        auto_decompress=False,
        # SECURITY: no cookie jar. Upstream cookies are a session of the injected
        # identity and must never be replayed on behalf of another client.
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=SKIP_AUTO_HEADERS,
        # SECURITY: no proxy, CA bundle or ~/.netrc credentials from the
        # environment; `upstream.proxy_for` decides the egress proxy per request.
        trust_env=False,
        raise_for_status=False,
        request_class=_Request,
        response_class=_Response,
    )


def timeouts(upstream: Upstream) -> aiohttp.ClientTimeout:
    """Connecting (TCP, TLS, the egress proxy's tunnel) and each read; no total:
    a git pack streams for as long as it takes. Waiting for a free connection
    of the pool is not bounded here (requests in flight are, by `read_timeout_s`)."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=None,
        sock_connect=upstream.connect_timeout_s,
        sock_read=upstream.read_timeout_s,
    )


def check(response: aiohttp.ClientResponse) -> None:
    """Raise BadUpstreamResponse for an answer aiohttp parsed but a proxy must not relay."""
    if not 100 <= response.status <= 599:
        raise BadUpstreamResponse(f"status {response.status} is outside 100-599")
    if response.status == 101:
        raise BadUpstreamResponse("it switched protocols")
    size = len(response.reason or "") + 13
    for name, value in response.raw_headers:
        size += len(name) + len(value) + 4
        if not _TOKENS_SEEN[name]:
            raise BadUpstreamResponse("a header name that is not a token")
    if size > MAX_HEAD_BYTES:
        raise BadUpstreamResponse(f"headers larger than {MAX_HEAD_BYTES // 1024} KiB")
    codings = response.headers.getall("Transfer-Encoding", ())
    if codings and ",".join(codings).strip().lower() != "chunked":
        raise BadUpstreamResponse("a transfer coding other than chunked")


def translate(err: BaseException, host: str) -> GatewayError:
    """The gateway error that an exception raised while talking to upstream means."""
    cause = err if isinstance(err, GatewayError | BodyReadError) else err.__cause__
    if isinstance(cause, GatewayError):  # raised by the request body stream (too large)
        return cause
    if isinstance(cause, BodyReadError):
        return BadRequest(f"reading the request body failed: {cause}")
    if isinstance(err, TimeoutError):  # ServerTimeoutError and kin are TimeoutErrors too
        return UpstreamTimeout(f"upstream host {host!r} did not answer in time")
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return UpstreamError(
            f"upstream host {host!r}: TLS certificate not trusted "
            "(set upstream.ca_file for a private CA)",
            reason="upstream_unreachable",
        )
    if isinstance(err, aiohttp.ClientProxyConnectionError):
        return UpstreamError(
            f"upstream host {host!r}: the egress proxy is unreachable ({_describe(err)})",
            reason="upstream_unreachable",
        )
    if isinstance(err, aiohttp.ClientHttpProxyError):
        return UpstreamError(
            f"upstream host {host!r}: the egress proxy refused the connection (HTTP {err.status})",
            reason="upstream_unreachable",
        )
    if isinstance(err, aiohttp.ClientConnectorError | aiohttp.ClientSSLError):
        return UpstreamError(
            f"upstream host {host!r} is unreachable ({_describe(err)})",
            reason="upstream_unreachable",
        )
    return UpstreamError(
        f"upstream host {host!r} sent an invalid or incomplete answer ({_describe(err)})",
        reason="bad_upstream_response",
    )


def _describe(err: BaseException) -> str:
    # SECURITY: never str(err) of a connector error: it names the proxy URL,
    # which may carry the proxy's credentials.
    if isinstance(err, aiohttp.ClientConnectorError):
        return err.os_error.strerror or type(err.os_error).__name__
    if isinstance(err, aiohttp.ClientResponseError):
        return err.message.split(":", 1)[0] if err.message else "not HTTP/1.1"
    if isinstance(err, BadUpstreamResponse):
        return str(err)
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "connection closed"
    if isinstance(err, aiohttp.ClientPayloadError):
        return "the body ended early or was malformed"
    return type(err).__name__
