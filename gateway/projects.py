"""Stage 2b: name the project a request addresses by id (or find the id of a name).

Azure DevOps answers with URLs that name projects by id (`url` of a queued build:
`/fabrikam/6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c/_apis/build/Builds/7`), while
policies name them (`projects: [fabrikam/Fabrikam-Fiber]`, ids accepted too).
When a client's decision depends on the project (`Policy.project_lookup`), the
gateway asks Azure DevOps which project it is, `GET
/{organization}/_apis/projects/{projectId}` with the client's own upstream
credential, and the policy decides on the name and the id.

`resolve_project` is the `resolve` stage's work: it sets `ctx.project` from the
cache (`ProjectNames`, one per process), or from a lookup it makes through the
forwarder with the client's upstream credential, which gets an audit line of
its own (`"kind": "project_lookup"`, with the request's id as its parent).

- Both directions (id -> name, name -> id) are cached per organization in this
  process, bounded (`max_entries`) and for `ttl_s` seconds. Each worker process
  keeps its own cache; a renamed project is seen by the next lookup after the TTL.
- Single flight: concurrent requests for the same project, calling with the same
  upstream credential, share one lookup. It runs as a task of its own, so a caller
  that goes away does not cancel it for the others.
- A lookup that fails (not found, refused, an error, an answer that does not name
  the project asked for) gives `ProjectRef(id, None)` and is not cached: the
  policy denies the request (`project_not_allowed`) and it is never forwarded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

from cachetools import TTLCache

from gateway.catalog import fold
from gateway.errors import GatewayError
from gateway.request_ids import new_request_id
from gateway.tasks import spawn
from gateway.types import ProjectRef, RequestContext

if TYPE_CHECKING:
    from gateway.app import Gateway, Runtime
    from gateway.config.model import Client

log = logging.getLogger("azdo_gateway.projects")

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_ENTRIES = 4096  # id -> name and name -> id pairs together
TTL_S = 600.0
MAX_ANSWER_BYTES = 64 * 1024  # a project's JSON is well under 2 KiB

# (organization, project as named) -> (id, name) upstream, or None when it cannot say
Lookup = Callable[[str, str], Awaitable[tuple[str, str] | None]]


def is_guid(text: str) -> bool:
    return GUID.match(text) is not None


def lookup_path(organization: str, project: str) -> str:
    """The Azure DevOps call that names a project (Projects - Get; id or name)."""
    return f"/{quote(organization, safe='')}/_apis/projects/{quote(project, safe='')}"


def parse_project(body: bytes, asked: str) -> tuple[str, str] | None:
    """(id, name) from a Projects - Get answer, if it is the project `asked` for.

    The answer is untrusted: it must be a JSON object whose `id` is a GUID and
    whose `name` is text, and whose id (or name, when a name was asked for)
    is the one asked for."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    pid, name = doc.get("id"), doc.get("name")
    if not isinstance(pid, str) or not is_guid(pid) or not isinstance(name, str) or not name:
        return None
    if (pid.lower() if is_guid(asked) else fold(name)) != (
        asked.lower() if is_guid(asked) else fold(asked)
    ):
        return None
    return pid.lower(), name


class ProjectNames:
    """The id <-> name cache of one process, and its in-flight lookups."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        ttl_s: float = TTL_S,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: TTLCache[tuple[str, str, str], str] = TTLCache(
            maxsize=max_entries, ttl=ttl_s, timer=timer
        )
        self._inflight: dict[tuple[str, str, str, str], asyncio.Future[tuple[str, str] | None]] = {}

    def __len__(self) -> int:
        return len(self._cache)

    @staticmethod
    def _key(organization: str, project: str) -> tuple[str, str, str]:
        if is_guid(project):
            return ("id", fold(organization), project.lower())
        return ("name", fold(organization), fold(project))

    def cached(self, organization: str, project: str) -> ProjectRef | None:
        found = self._cache.get(self._key(organization, project))
        if found is None:
            return None
        if is_guid(project):
            return ProjectRef(project.lower(), found)
        return ProjectRef(found, project)

    async def resolve(
        self, organization: str, project: str, lookup: Lookup, *, credential: str
    ) -> ProjectRef:
        """The project as id and name; `name` (or `id`) None when it cannot be had."""
        known = self.cached(organization, project)
        if known is not None:
            return known
        flight = (credential, *self._key(organization, project))
        pending = self._inflight.get(flight)
        if pending is None:
            pending = spawn(self._lookup(flight, organization, project, lookup))
            self._inflight[flight] = pending
        found = await asyncio.shield(pending)
        if found is None:
            return ProjectRef(project.lower(), None) if is_guid(project) else ProjectRef(None, None)
        return ProjectRef(*found)

    async def _lookup(
        self,
        flight: tuple[str, str, str, str],
        organization: str,
        project: str,
        lookup: Lookup,
    ) -> tuple[str, str] | None:
        try:
            found = await lookup(organization, project)
        except Exception:  # the caller's request must not fail for the lookup's reason
            log.exception("project lookup %s/%s failed", organization, project)
            found = None
        finally:
            self._inflight.pop(flight, None)
        if found is not None:
            pid, name = found
            org = fold(organization)
            self._cache[("id", org, pid)] = name
            self._cache[("name", org, fold(name))] = pid
        return found


async def resolve_project(
    gateway: Gateway, ctx: RequestContext, rt: Runtime, client: Client
) -> None:
    """The project the request names by id gets its name (or a name its id):
    called when the client's decision depends on it (`Policy.project_lookup`)."""
    match = ctx.match
    assert match is not None and match.organization is not None and match.project is not None

    async def lookup(organization: str, project: str) -> tuple[str, str] | None:
        return await _look_up(gateway, ctx, rt, client, organization, project)

    ctx.project = await gateway.projects.resolve(
        match.organization, match.project, lookup, credential=client.credential
    )


async def _look_up(
    gateway: Gateway,
    ctx: RequestContext,
    rt: Runtime,
    client: Client,
    organization: str,
    project: str,
) -> tuple[str, str] | None:
    """GET /{organization}/_apis/projects/{project} upstream, with its own audit line."""
    path = lookup_path(organization, project)
    look = RequestContext(
        request_id=new_request_id(),
        method="GET",
        effective_method="GET",
        host="main",
        path=path,
        query="api-version=7.1",
        identity=ctx.identity,
    )
    look.match = rt.catalog.match("main", "GET", path)
    found: tuple[str, str] | None = None
    try:
        body = await gateway.forwarder.fetch(
            look, rt.forwarding, rt.tokens, client, max_bytes=MAX_ANSWER_BYTES
        )
        found = None if body is None else parse_project(body, project)
    except GatewayError as err:  # no upstream token for the client right now
        look.error_reason = err.reason
    gateway.observability.looked_up(look, ctx.request_id, found)
    return found
