"""Stage 0: canonicalize the request target.

Takes the raw request target (path and query exactly as received) and returns
the upstream host name and the one canonical path every later stage sees.
Rejects (400, reason `ambiguous_path`) anything whose meaning could differ
between the gateway and Azure DevOps.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from gateway.errors import BadRequest

HOSTS_PREFIX = "/_hosts/"


@dataclass(frozen=True, slots=True)
class Target:
    host: str  # key of upstream.hosts
    path: str  # canonical path to send upstream (without /_hosts/{name})
    query: str  # raw query string, without '?'


def canonicalize(raw_target: str, hosts: Collection[str]) -> Target:
    """Split and check `raw_target`; raise BadRequest if it is ambiguous."""
    path, _, query = raw_target.partition("?")
    if not path.startswith("/"):
        raise BadRequest("request target must be a path", reason="ambiguous_path")
    host = "main"
    if path.lower().startswith(HOSTS_PREFIX):
        name, _, rest = path[len(HOSTS_PREFIX) :].partition("/")
        if name not in hosts:
            raise BadRequest(f"unknown upstream host {name!r}", reason="bad_request")
        host, path = name, "/" + rest
    return Target(host=host, path=path, query=query)
