"""Request body size limits per route class.

Takes the catalog match of a request (`RequestContext.match`) and the
configured `limits`; returns the route class of the request and the largest
body it may send upstream (None: no limit). The forwarder enforces it: 413
`payload_too_large` before anything reaches Azure DevOps when a declared
`Content-Length` is over it, and the upload is cut off when a chunked body
grows past it.

The class follows from where the matched operation lives, which the catalog's
path templates state:

- `git`: git smart HTTP (clone, fetch, push) and Git LFS, under `/_git/`;
  packs and LFS objects are as large as the repository's content;
- `packages`: the package feed protocols (NuGet, npm, Maven, PyPI, Cargo,
  Universal Packages) under `/_packaging/`;
- `rest`: every other catalog operation, the JSON REST APIs under `/_apis/`;
- `unmatched`: a request no catalog operation matches, let through by a route
  rule with `allow: true`.

`limits.max_body_bytes` stays the ceiling above every class.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.model import BodyClass, Limits
from gateway.types import Match, Operation

BODY_CLASSES: tuple[BodyClass, ...] = ("rest", "git", "packages", "unmatched")


def operation_class(operation: Operation) -> BodyClass:
    """The route class of a catalog operation, from its path template."""
    template = operation.template.lower()
    if "/_git/" in template:
        return "git"
    if "/_packaging/" in template:
        return "packages"
    return "rest"


def body_class(match: Match | None) -> BodyClass:
    """The route class of a request: its operation's, or `unmatched`."""
    return "unmatched" if match is None else operation_class(match.operation)


def effective_limits(limits: Limits) -> Mapping[BodyClass, int | None]:
    """Every class's cap with `max_body_bytes` applied, computed once per configuration."""
    return {c: limits.body_bytes.limit(c, limits.max_body_bytes) for c in BODY_CLASSES}


def too_large(limit: int, body_class: str = "") -> str:
    """The 413 message: the limit, and the class it belongs to when known."""
    return f"request body is larger than {limit} bytes" + (
        f" ({body_class} limit)" if body_class else ""
    )


def describe(limits: Limits) -> str:
    """One line for `check`: 'rest 32 MiB, git no limit, ...'."""
    return ", ".join(f"{c} {_size(n)}" for c, n in effective_limits(limits).items())


def _size(n: int | None) -> str:
    if n is None:
        return "no limit"
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"
