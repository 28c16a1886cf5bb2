"""Plain data passed between the stages of the request pipeline.

Every stage value is a frozen dataclass; only `RequestContext`, the per-request
record that the stages fill in one after another, is mutable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

AuthMethod = Literal["api_key", "entra", "certificate"]


@dataclass(frozen=True, slots=True)
class Operation:
    """One Azure DevOps operation from the catalog."""

    id: str  # stable id, e.g. "git.Repositories_List"; a metric/audit value
    area: str  # catalog area, e.g. "git"; the `operation_area` metric label
    host: str  # key of `upstream.hosts`, e.g. "main", "vsrm"
    method: str  # upper case
    template: str  # path template, e.g. "/{organization}/{project}/_apis/git/repositories"
    scopes: tuple[str, ...]  # any one of them suffices; empty: the spec states none
    public: bool = False  # any authenticated client may call it (discovery endpoints)
    deny_reason: str | None = None  # always denied with this reason (SOAP, batch)
    note: str = ""  # why a hand-written entry exists / what the spec says
    query: tuple[tuple[str, str], ...] = ()  # this operation only when these query params match
    # a form of the operation that leaves out these optional path segments (the
    # specification's "x-ms-required": false); () for its full template
    omits: tuple[str, ...] = ()
    # an alternative of the path's operation, chosen when the request's JSON body has these
    # top-level fields with these values (a Git LFS batch that says "operation": "upload")
    body: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    """An operation matched against a request, with the bound path parameters."""

    operation: Operation
    params: Mapping[str, str]
    organization: str | None
    project: str | None


@dataclass(frozen=True, slots=True)
class ProjectRef:
    """A project the request names, as both id and name once the gateway looked it up.

    `id` is a lower-case GUID; either field is None when it is not known (a request
    naming an id Azure DevOps does not know has `name=None`)."""

    id: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who is calling: the policy client name and how it proved it."""

    client: str  # name of the policy client
    auth_method: AuthMethod
    subject: str  # key id, token oid/appid or certificate fingerprint: safe to log
    tenant_id: str | None = None
    object_id: str | None = None
    # The validated Entra access token, kept for on-behalf-of exchange. Never logged.
    user_assertion: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one request."""

    allowed: bool
    reason: str | None  # machine-readable; one of gateway.errors.REASONS when denied
    required_scopes: tuple[str, ...] = ()
    report_only: bool = False  # denied by policy but let through because mode: report
    rule: str | None = None  # the route rule that decided, if any
    message: str = ""  # human-readable explanation


@dataclass(frozen=True, slots=True)
class UpstreamToken:
    """The `Authorization` header value to inject upstream."""

    header_value: str = field(repr=False)
    credential: str  # name of the credential in `credentials`
    expires_at: float | None = None  # epoch seconds; None: does not expire (PAT)
    key: tuple[str, ...] = ()  # cache key within the credential (on-behalf-of: the user)


@dataclass(slots=True)
class RequestContext:
    """Everything the pipeline learned about one request.

    Filled in order: request id and timing first, then `host`/`path` by
    canonicalization, `identity` by authentication, `match` by the catalog,
    `decision` by policy, `credential` and upstream fields by the proxy.
    """

    request_id: str
    method: str  # the client's method, upper case
    source: str | None = None  # client address (gateway.clientaddr); throttled and audited
    user_agent: str | None = None  # the User-Agent header as sent (audit bounds and escapes it)
    started: float = field(default_factory=time.perf_counter)
    effective_method: str = ""  # method authorized (differs when an override header names one)
    host: str = "main"  # key of upstream.hosts the request goes to
    path: str = ""  # canonical upstream path (without the /_hosts/{name} prefix)
    query: str = ""  # raw query string, forwarded as received
    identity: ClientIdentity | None = None
    match: Match | None = None
    project: ProjectRef | None = None  # the matched project as id and name, when looked up
    decision: Decision | None = None
    credential: str | None = None
    upstream_status: int | None = None
    upstream_seconds: float | None = None
    activity_id: str | None = None  # upstream ActivityId header
    bytes_in: int = 0
    bytes_out: int = 0
    status: int | None = None  # status sent to the client
    error_reason: str | None = None  # reason of a gateway-produced error
    # upstream X-RateLimit-* and Retry-After response headers (name -> value), if any
    upstream_rate_limit: dict[str, str] = field(default_factory=dict)
