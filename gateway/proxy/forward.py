"""Stage 5: forward one authorized request upstream and stream the answer back.

Takes the client's request and its RequestContext (canonical host, path and
query, authorized method, identity) and the token broker; returns the
StreamResponse relayed from Azure DevOps. Bodies stream both ways with
backpressure and are never held whole in memory, except JSON bodies the
rewriter asks for, up to `limits.rewrite_max_bytes`. Request bodies are capped
per route class (`gateway.proxy.bodylimits`).

The HTTP client is the worker's one aiohttp `ClientSession`
(`gateway.proxy.upstream`). Upstream's final status line and headers must
come within `read_timeout_s` of the request having been sent: interim
answers (`100 Continue`, `103`) dripping in do not extend that wait.

Raises (before anything was sent to the client): PayloadTooLarge (413),
UpstreamError (502: unreachable, bad response, our credential rejected),
UpstreamTimeout (504). Once the response has started, an upstream failure
aborts the client connection instead: a half-sent body never gets an error
appended to it, and never ends like a whole one.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.body_select import PREREAD
from gateway.config.model import BodyClass, Client, Config
from gateway.errors import GatewayError, PayloadTooLarge, UpstreamError
from gateway.listener import problem
from gateway.observability import Observability
from gateway.proxy import headers as hdrs
from gateway.proxy import leaks
from gateway.proxy.bodylimits import body_class, effective_limits, too_large
from gateway.proxy.upstream import (
    BodyReadError,
    Deadlines,
    arrived,
    open_session,
    timeouts,
    translate,
)
from gateway.tokens import TokenBroker
from gateway.types import RequestContext, UpstreamToken

# RFC 9110 §9.2.2: methods whose repetition has the same effect as one request.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# What Azure DevOps answers a credential it does not accept with: 401, or (when
# it would rather redirect a browser to sign in) 203 with the sign-in page.
CREDENTIAL_REJECTED = frozenset({401, 203})
# Answers that never have a body (RFC 9110 §6.4.1): relayed as they are.
NO_BODY = frozenset({204, 304})
# Sent on every upstream request: answer 401 instead of a sign-in redirect.
FEDAUTH = ("X-TFS-FedAuthRedirect", "Suppress")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Rewriter(Protocol):
    """What `gateway.proxy.rewrite.Rewriter` offers the forwarder."""

    def public_url_for(self, request: web.BaseRequest | None = None) -> str: ...
    def rewrite_headers(
        self, headers: Mapping[str, str], *, host: str = ..., public_url: str | None = ...
    ) -> CIMultiDict[str]: ...
    def look(
        self, headers: Mapping[str, str], path: str | None = ...
    ) -> tuple[bool, str | None]: ...
    async def rewrite_body_async(
        self,
        body: bytes,
        *,
        public_url: str | None = ...,
        content_encoding: str = ...,
        content_type: str = ...,
        host: str = ...,
        path: str = ...,
        on_skip: Callable[[str], None] | None = ...,
    ) -> bytes: ...


def load_rewriter(config: Config) -> Rewriter | None:
    """The response rewriter, or None while `gateway.proxy.rewrite` is absent."""
    try:
        module = importlib.import_module("gateway.proxy.rewrite")
    except ModuleNotFoundError as err:
        if err.name != "gateway.proxy.rewrite":
            raise
        return None
    rewriter: Rewriter = module.Rewriter(config)
    return rewriter


class RequestBody:
    """The client's body, streamed upstream once: counted, capped, never buffered."""

    def __init__(
        self, request: web.BaseRequest, ctx: RequestContext, limit: int | None, kind: str = ""
    ) -> None:
        self.request, self.ctx, self.limit, self.kind = request, ctx, limit, kind
        self.started = False
        self.on_end: Callable[[], None] | None = None  # called once the whole body was read
        # the whole body, when an earlier stage read it to authorize it (gateway.body_select)
        self.preread = request.get(PREREAD)

    async def chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        if self.preread is not None:
            self.ctx.bytes_in += len(self.preread)
            if self.limit is not None and self.ctx.bytes_in > self.limit:
                raise PayloadTooLarge(too_large(self.limit, self.kind))
            if self.preread:
                yield self.preread
            if self.on_end is not None:
                self.on_end()
            return
        while True:
            try:
                chunk = await self.request.content.readany()
            except Exception as err:  # the client's side broke, not upstream's
                raise BodyReadError(problem(err)) from err  # in words: no client bytes
            if not chunk:
                if self.on_end is not None:
                    self.on_end()
                return
            self.ctx.bytes_in += len(chunk)
            if self.limit is not None and self.ctx.bytes_in > self.limit:
                raise PayloadTooLarge(too_large(self.limit, self.kind))
            yield chunk


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What one configuration tells the forwarder, built once with its Runtime.

    A request forwards with the Forwarding of the Runtime it started with, so a
    reload never changes the origins, limits or rewriter of a request in flight,
    and a host the reload removes stays reachable for the requests already on it.
    """

    origins: Mapping[str, str]  # upstream.hosts: name -> base URL
    proxies: Mapping[str, str | None]  # name -> its egress proxy (None: direct)
    body_limits: Mapping[BodyClass, int | None]  # per route class, max_body_bytes applied
    rewrite_max_bytes: int
    rewriter: Rewriter | None
    timeout: aiohttp.ClientTimeout  # connect_timeout_s, read_timeout_s

    @classmethod
    def from_config(cls, config: Config) -> Forwarding:
        limits, upstream = config.gateway.limits, config.gateway.upstream
        return cls(
            origins=dict(upstream.hosts),
            proxies={name: upstream.proxy_for(url) for name, url in upstream.hosts.items()},
            body_limits=effective_limits(limits),
            rewrite_max_bytes=limits.rewrite_max_bytes,
            rewriter=load_rewriter(config),
            timeout=timeouts(upstream),
        )

    def url(self, ctx: RequestContext) -> URL:
        """Where `ctx`'s request goes: its host's base URL + the canonical path and query."""
        target = self.origins[ctx.host] + ctx.path + ("?" + ctx.query if ctx.query else "")
        return URL(target, encoded=True)


class Forwarder:
    """The process's aiohttp ClientSession (its connection pool), shared by all requests.

    It holds no configuration of its own: every request brings the `Forwarding`
    of its Runtime (timeouts and egress proxy included). `upstream.ca_file` and
    the connection limits are read once, when the session starts.
    """

    def __init__(self, config: Config, observability: Observability) -> None:
        self.upstream = config.gateway.upstream
        self.observability = observability  # process-wide, as the session is
        self.session: aiohttp.ClientSession | None = None
        self.deadlines: Deadlines | None = None  # the worker's one timer for read_timeout_s
        self._forms: dict[str, tuple[bytes, ...]] = {}

    async def start(self) -> None:
        self.session = open_session(self.upstream)
        self.deadlines = Deadlines(asyncio.get_running_loop())

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _send(
        self,
        fw: Forwarding,
        ctx: RequestContext,
        method: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> aiohttp.ClientResponse:
        """Send the request; return once upstream's final status line and headers are in."""
        session, deadlines = self.session, self.deadlines
        assert session is not None and deadlines is not None, "Forwarder.start() was not awaited"
        read_timeout = fw.timeout.sock_read
        proxy = fw.proxies[ctx.host]
        # Without a body the request is sent at once: the deadline starts now.
        with deadlines.within(read_timeout if body is None else None) as deadline:
            if read_timeout is not None and body is not None:
                loop = asyncio.get_running_loop()
                body.on_end = lambda: deadline.reschedule(loop.time() + read_timeout)
            up = await session.request(
                method,
                fw.url(ctx),
                headers=headers,
                data=body.chunks() if body is not None else None,
                allow_redirects=False,
                timeout=fw.timeout,
                proxy=proxy,
            )
        if proxy is not None and up.status == 407:
            # Plain HTTP through the proxy: its refusal comes as the answer.
            up.close()
            raise aiohttp.ClientHttpProxyError(up.request_info, (), status=407)
        return up

    async def forward(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        fw: Forwarding,
        tokens: TokenBroker,
        client: Client,
    ) -> web.StreamResponse:
        assert ctx.identity is not None
        method = ctx.effective_method or ctx.method
        kind = body_class(ctx.match)
        limit = fw.body_limits[kind]
        if limit is not None and (request.content_length or 0) > limit:
            raise PayloadTooLarge(too_large(limit, kind))
        base = hdrs.to_upstream(request.headers)
        base[FEDAUTH[0]] = FEDAUTH[1]
        base["X-Request-ID"] = ctx.request_id
        if "X-TFS-Session" not in base and _GUID.match(ctx.request_id):
            base["X-TFS-Session"] = ctx.request_id  # Azure DevOps' own correlation id (a GUID)
        body = RequestBody(request, ctx, limit, kind) if request.body_exists else None
        if (
            body is not None
            and body.preread is None  # the stage that read it sent 100 Continue
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            # Authenticated, authorized and within the size limit: now the client
            # may send the body it held back (a denied one never has to).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        for attempt in (1, 2):
            token = await tokens.acquire(ctx.identity, client)
            ctx.credential = token.credential
            base["Authorization"] = token.header_value  # a retry replaces it
            started = time.perf_counter()
            try:
                up = await self._send(fw, ctx, method, base, body)
                try:
                    ctx.upstream_status = up.status
                    ctx.activity_id = up.headers.get("ActivityId")
                    if up.status in CREDENTIAL_REJECTED:
                        tokens.invalidate(token)
                        safe = method in IDEMPOTENT and (body is None or not body.started)
                        if attempt == 1 and safe:
                            continue
                        raise _rejected(token, up.status)
                    return await self.relay(
                        request, ctx, fw, up, started, secrets=self._secrets(token)
                    )
                finally:
                    up.release()
            except (aiohttp.ClientError, TimeoutError, BodyReadError) as err:
                # Before anything was sent to the client (relay handles the rest).
                raise translate(err, ctx.host) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch(
        self,
        ctx: RequestContext,
        fw: Forwarding,
        tokens: TokenBroker,
        client: Client,
        *,
        max_bytes: int,
    ) -> bytes | None:
        """The gateway's own GET of `ctx.host`/`ctx.path` with the client's upstream
        credential (a project lookup): the body of a 200 answer of at most
        `max_bytes`, else None. Fills `ctx`'s upstream fields for its audit line."""
        assert ctx.identity is not None
        token = await tokens.acquire(ctx.identity, client)
        ctx.credential = token.credential
        headers = CIMultiDict(
            {
                "Accept": "application/json",
                "Authorization": token.header_value,
                "X-Request-ID": ctx.request_id,
                FEDAUTH[0]: FEDAUTH[1],
            }
        )
        started = time.perf_counter()
        try:
            up = await self._send(fw, ctx, "GET", headers, None)
            try:
                ctx.upstream_status = ctx.status = up.status
                ctx.activity_id = up.headers.get("ActivityId")
                if up.status in CREDENTIAL_REJECTED:
                    tokens.invalidate(token)
                if up.status != 200 or (up.content_length or 0) > max_bytes:
                    return None
                chunks: list[bytes] = []
                async for chunk in up.content.iter_any():
                    chunks.append(chunk)
                    ctx.bytes_out += len(chunk)
                    if ctx.bytes_out > max_bytes:
                        return None
                return b"".join(chunks)
            finally:
                up.release()
                ctx.upstream_seconds = time.perf_counter() - started
        except (aiohttp.ClientError, TimeoutError) as err:
            ctx.error_reason = translate(err, ctx.host).reason
            return None

    def _secrets(self, token: UpstreamToken) -> tuple[bytes, ...]:
        """What of `token` must never reach a client (gateway.proxy.leaks), remembered."""
        found = self._forms.get(token.header_value)
        if found is None:
            if len(self._forms) >= 256:
                self._forms.clear()
            found = self._forms[token.header_value] = leaks.forms(token.header_value)
        return found

    async def relay(
        self,
        request: web.BaseRequest,
        ctx: RequestContext,
        fw: Forwarding,
        up: aiohttp.ClientResponse,
        started: float,
        *,
        secrets: tuple[bytes, ...] = (),
    ) -> web.StreamResponse:
        """Send upstream's answer to the client: buffered for rewriting, or streamed;
        without the gateway's credential (`secrets`) in its headers or a body it holds."""
        rewriter = fw.rewriter
        prefix: list[bytes] = []
        body: bytes | None = None
        with_body = request.method != "HEAD" and up.status not in NO_BODY
        rewritable, unread = False, None
        if with_body and rewriter is not None:
            rewritable, unread = rewriter.look(up.headers, ctx.path)
        if rewritable:
            body, prefix = await self._buffer(up, fw.rewrite_max_bytes)
            if body is None:  # longer than announced, or announced by no Content-Length
                self.observability.metrics.rewrite_skip("too_large")
        elif unread is not None:
            self.observability.metrics.rewrite_skip(unread)
        if not rewritable and with_body and up.content.is_eof():
            # a small answer often arrives whole with its headers
            body = arrived(up)
            if body is None:
                body = await up.read()
        headers = hdrs.to_client(up.headers, body_rewritten=body is not None)
        # the response headers that can carry an upstream URL (see gateway.proxy.rewrite)
        has_location = "Location" in headers or "Content-Location" in headers
        if rewriter is not None and (rewritable or has_location):
            public_url = rewriter.public_url_for(request)
            if has_location:
                headers = rewriter.rewrite_headers(headers, host=ctx.host, public_url=public_url)
            if body and rewritable:
                # In slices for a big body: other requests on this worker run between them.
                body = await rewriter.rewrite_body_async(
                    body,
                    public_url=public_url,
                    content_encoding=up.headers.get("Content-Encoding", ""),
                    content_type=up.headers.get("Content-Type", ""),
                    host=ctx.host,
                    path=ctx.path,
                    on_skip=self.observability.metrics.rewrite_skip,
                )
        if body and secrets:
            body = leaks.scrub_body(body, secrets, up.headers, fw.rewrite_max_bytes)
        leaks.scrub_headers(headers, secrets)
        if body is not None:
            # Whole (and rewritten): aiohttp sends status line, headers and body
            # in one write once the pipeline returns.
            ctx.bytes_out = len(body)
            ctx.upstream_seconds = time.perf_counter() - started
            return web.Response(body=body, status=up.status, reason=up.reason, headers=headers)
        headers["X-Request-ID"] = ctx.request_id
        response = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
        await response.prepare(request)
        try:
            for chunk in prefix:
                await self._write(response, ctx, chunk)
            if with_body:
                async for chunk in up.content.iter_any():
                    await self._write(response, ctx, chunk)
            ctx.upstream_seconds = time.perf_counter() - started
        except ConnectionResetError:  # the client went away
            return response
        except (aiohttp.ClientError, TimeoutError) as err:
            # Upstream broke mid-body. The status line is already out, so the
            # only honest signal left is to cut the connection: a client never
            # mistakes a truncated body for a whole one.
            ctx.error_reason = (
                "upstream_timeout" if isinstance(err, TimeoutError) else ("bad_upstream_response")
            )
            up.close()
            request.protocol.force_close()
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response

    @staticmethod
    async def _buffer(up: aiohttp.ClientResponse, cap: int) -> tuple[bytes | None, list[bytes]]:
        """Read a body the rewriter wants, up to the cap; past it, hand back the prefix."""
        if up.content_length is not None and up.content_length > cap:
            return None, []
        whole = arrived(up)  # a small answer often arrives whole with its headers
        if whole is not None:
            return (whole, []) if len(whole) <= cap else (None, [whole])
        chunks: list[bytes] = []
        size = 0
        async for chunk in up.content.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return None, chunks
        return b"".join(chunks), []

    @staticmethod
    async def _write(response: web.StreamResponse, ctx: RequestContext, chunk: bytes) -> None:
        await response.write(chunk)
        ctx.bytes_out += len(chunk)


def _rejected(token: UpstreamToken, status: int) -> GatewayError:
    return UpstreamError(
        f"Azure DevOps rejected the gateway's credential {token.credential!r} (HTTP {status}); "
        "it may be expired, revoked or lack access to this organization",
        reason="upstream_credential_rejected",
    )
