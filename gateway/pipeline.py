"""The request pipeline: the stages every proxied request passes, in order.

`PIPELINE` lists them; `chain(PIPELINE)` composes them, once, into the one
handler of the proxy's low-level aiohttp server (no router, middlewares or
signals: every request takes the same way). A stage is

    async def stage(call: Call, next: Next) -> web.StreamResponse

It works on `call` (the request, its RequestContext, the Runtime it is pinned
to, the process's resources), then either answers (returns a response or
raises a GatewayError) or hands the call on with `await next(call)`. A stage
that wraps the rest (request id, observe, render errors, shed, limit) awaits
`next` inside its own try block. Adding a stage is one line in `PIPELINE`.

Errors: a GatewayError becomes its JSON (or git text) answer in
`render_errors`; any other exception is a fault of the gateway, logged once
with the request id and answered as JSON 500 `internal_error`. Only a client
that went away (the handler cancelled, its connection reset) is recorded as 499.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from gateway import body_select
from gateway.canonical import canonicalize as canonical_target
from gateway.canonical import check_headers, effective_method
from gateway.clientaddr import client_address
from gateway.config.model import Client
from gateway.errors import Denied, GatewayError, InternalError
from gateway.observability.logs import REQUEST_ID
from gateway.projects import resolve_project
from gateway.request_ids import new_request_id
from gateway.types import RequestContext

if TYPE_CHECKING:
    from gateway.app import Gateway, Runtime

log = logging.getLogger("azdo_gateway")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(slots=True)
class Call:
    """One request on its way through the pipeline."""

    request: web.BaseRequest
    gateway: Gateway  # the process's resources: observability, limits, forwarder, ...
    ctx: RequestContext = field(init=False)  # set by request_id
    rt: Runtime = field(init=False)  # set by request_id: the Runtime this request uses
    client: Client = field(init=False)  # set by authenticate: the policy client


Next = Callable[[Call], Awaitable[web.StreamResponse]]


class Stage(Protocol):
    def __call__(self, call: Call, next: Next) -> Awaitable[web.StreamResponse]: ...


async def _end(call: Call) -> web.StreamResponse:
    raise AssertionError("the pipeline's last stage must answer")


def chain(stages: Sequence[Stage]) -> Next:
    """The stages composed into one handler: stage 1 gets stage 2 as its `next`, ..."""
    handler: Next = _end
    for stage in reversed(stages):
        handler = partial(stage, next=handler)
    return handler


# --- the stages, in order ---------------------------------------------------


async def request_id(call: Call, next: Next) -> web.StreamResponse:
    """Take or make X-Request-ID; pin the current Runtime; the source address."""
    request, gateway = call.request, call.gateway
    headers = request.headers
    given = headers.get("X-Request-ID", "")
    rid = given if _REQUEST_ID.match(given) else new_request_id()
    rt = call.rt = gateway.runtime
    call.ctx = RequestContext(
        request_id=rid,
        method=request.method.upper(),
        source=client_address(request.remote, headers, rt.trusted_proxies),
        user_agent=headers.get("User-Agent"),
    )
    logged = REQUEST_ID.set(rid)  # log lines of this request carry its id
    gateway.pin(rt)
    try:
        response = await next(call)
        if not response.prepared:  # a streamed answer got it from the forwarder
            response.headers["X-Request-ID"] = rid
        return response
    finally:
        gateway.unpin(rt)
        REQUEST_ID.reset(logged)


async def observe(call: Call, next: Next) -> web.StreamResponse:
    """Metrics and the audit line, whatever the outcome."""
    ctx, observability = call.ctx, call.gateway.observability
    observability.started(ctx)
    try:
        response = await next(call)
        ctx.status = response.status
        ctx.bytes_out = ctx.bytes_out or response.body_length
        return response
    except BaseException:
        # render_errors answers everything but a client that went away
        ctx.status = ctx.status or 499
        raise
    finally:
        ctx.bytes_in = ctx.bytes_in or call.request.content.total_bytes
        observability.finished(ctx)


async def render_errors(call: Call, next: Next) -> web.StreamResponse:
    """A GatewayError becomes its answer; any other exception (but a client gone) a 500."""
    try:
        return await next(call)
    except GatewayError as err:
        return error_response(call, err)
    except ConnectionError:  # the client's connection broke: observe records 499
        raise
    except Exception:
        ctx = call.ctx
        log.exception("internal error handling request %s", ctx.request_id)
        if call.request.writer.output_size:
            # Part of the answer is out: cutting the connection is the only honest
            # signal left (aiohttp then drops the answer returned below).
            if call.request.transport is not None:
                call.request.transport.close()
        return error_response(call, InternalError("internal error in the gateway"))


def error_response(call: Call, err: GatewayError) -> web.Response:
    call.ctx.error_reason = err.reason
    as_text = call.request.headers.get("User-Agent", "").startswith("git/")
    rid = call.ctx.request_id
    return web.Response(
        status=err.status,
        body=err.to_text(rid) if as_text else err.to_json(rid),
        content_type="text/plain" if as_text else "application/json",
        headers=err.headers,
    )


async def shed(call: Call, next: Next) -> web.StreamResponse:
    """503 when the process has limits.max_inflight requests."""
    limits = call.gateway.limits
    limits.enter(call.rt.config.gateway.limits.max_inflight)
    try:
        return await next(call)
    finally:
        limits.leave()


async def canonicalize(call: Call, next: Next) -> web.StreamResponse:
    """Raw target -> upstream host, canonical path and query; refuse ambiguous headers."""
    ctx, gw = call.ctx, call.rt.config.gateway
    target = canonical_target(
        call.request.raw_path, gw.upstream.hosts, max_length=gw.limits.max_url_length
    )
    ctx.host, ctx.path, ctx.query = target.host, target.path, target.query
    headers = call.request.headers.items()
    overridden = check_headers(headers)
    ctx.effective_method = effective_method(ctx.method, headers) if overridden else ctx.method
    return await next(call)


async def authenticate(call: Call, next: Next) -> web.StreamResponse:
    """Key, Entra token or client certificate -> ClientIdentity and its policy client.

    The credential headers stay on the request: the forwarder's header cleaning
    (gateway.proxy.headers) is the one place that keeps them from upstream."""
    ctx, rt = call.ctx, call.rt
    ctx.identity = identity = await rt.authn.authenticate(call.request, ctx)
    client = rt.config.client(identity.client)
    if client is None:  # an authenticator named a client this policy lacks
        raise Denied(f"no client {identity.client!r} in the policy", reason="unknown_client")
    call.client = client
    return await next(call)


async def limit(call: Call, next: Next) -> web.StreamResponse:
    """The client's rate limits around the rest; learns from upstream's throttling headers."""
    gateway = call.gateway
    return await gateway.limits.guard(
        call.client, call.ctx, partial(next, call), gateway.observability.metrics
    )


async def match(call: Call, next: Next) -> web.StreamResponse:
    """The catalog's operation for host, method and path."""
    ctx = call.ctx
    ctx.match = call.rt.catalog.match(ctx.host, ctx.effective_method, ctx.path, ctx.query)
    return await next(call)


async def select(call: Call, next: Next) -> web.StreamResponse:
    """... or the operation its body selects (a Git LFS upload batch; gateway.body_select)."""
    match = call.ctx.match
    if match is not None and (variants := call.rt.catalog.body_variants(match.operation)):
        await body_select.select(call.request, call.ctx, match, variants)
    return await next(call)


async def resolve(call: Call, next: Next) -> web.StreamResponse:
    """A project named by id gets its name (gateway.projects), for the policy."""
    ctx, rt = call.ctx, call.rt
    if rt.policy.project_lookup(call.client.name, ctx.match):
        await resolve_project(call.gateway, ctx, rt, call.client)
    return await next(call)


async def authorize(call: Call, next: Next) -> web.StreamResponse:
    """The client's policy."""
    ctx = call.ctx
    assert ctx.identity is not None
    decision = call.rt.policy.authorize(ctx.identity, ctx)
    ctx.decision = decision
    if not decision.allowed:
        raise Denied(
            decision.message or "request not allowed by policy",
            reason=decision.reason,
            required_scopes=decision.required_scopes,
            operation=ctx.match.operation.id if ctx.match else None,
        )
    return await next(call)


async def forward(call: Call, next: Next) -> web.StreamResponse:
    """Upstream token, stream both ways (credentials dropped), rewrite URLs."""
    rt = call.rt
    return await call.gateway.forwarder.forward(
        call.request, call.ctx, rt.forwarding, rt.tokens, call.client
    )


PIPELINE: tuple[Stage, ...] = (
    request_id,
    observe,
    render_errors,
    shed,
    canonicalize,
    authenticate,
    limit,
    match,
    select,
    resolve,
    authorize,
    forward,
)
