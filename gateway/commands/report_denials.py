"""`azdo-gateway report`: the would-be denials of each client, and what would allow them.

A client's policy denials (403 reasons) come from two kinds of audit line: those
of a client in `mode: enforce` (`"decision": "deny"`), and those a client in
`mode: report` was let through with (`"decision": "allow", "reportOnly": true`,
with the reason it would have been denied for). Both are listed per client,
grouped by reason, method, host and the path's shape: a path no operation
matches is generalized the way catalog templates are written (`/{organization}`,
`/{project}`, ids, GUIDs, commit ids and repository names as parameters), so the
same unknown call on many ids is one entry.

Each entry says what would allow it: the missing scope, the organization or
project to add, the route rule that denies it, or, for a call no operation
matches (or a batch endpoint), a ready-to-paste route rule that allows exactly
that shape for that client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import POLICY_REASONS

EXAMPLES = 3  # distinct canonical paths kept per entry
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_ID = re.compile(r"^(\d+|[0-9a-f]{7,64})$", re.I)  # numbers, commit ids, object ids
_NAMED_AFTER = {"_git": "{repository}", "_packaging": "{feed}"}


def shape(path: str) -> str:
    """The template-like form of a canonical path (`/fabrikam/Fiber/_apis/x/12` ->
    `/{organization}/{project}/_apis/x/{id}`)."""
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        after = segments[i - 1].lower() if i else ""
        nxt = segments[i + 1] if i + 1 < len(segments) else ""
        if i == 0 and seg and not seg.startswith("_"):
            out.append("{organization}")
        elif i == 1 and out[0] == "{organization}" and not seg.startswith("_") and nxt[:1] == "_":
            out.append("{project}")
        elif after in _NAMED_AFTER and seg and not seg.startswith("_"):
            out.append(_NAMED_AFTER[after])
        elif _GUID.match(seg) or (_ID.match(seg) and any(c.isdigit() for c in seg)):
            out.append("{id}")
        else:
            out.append(seg)
    return "/" + "/".join(out)


@dataclass
class Denial:
    """One group of would-be denials of one client."""

    reason: str
    method: str
    host: str
    path: str  # the shape
    operation: str | None
    required: tuple[str, ...] = ()
    organization: str | None = None
    project: str | None = None
    rule: str | None = None
    count: int = 0
    report_only: int = 0
    examples: list[str] = field(default_factory=list)


def add(groups: dict[tuple[str, ...], Denial], entry: Mapping[str, Any]) -> None:
    """Count one audit line, if it is a (would-be) policy denial."""
    reason = entry.get("reason")
    if reason not in POLICY_REASONS:
        return
    report_only = bool(entry.get("reportOnly")) and entry.get("decision") == "allow"
    if entry.get("decision") != "deny" and not report_only:
        return
    method = str(entry.get("effectiveMethod") or entry.get("method") or "?")
    host = str(entry.get("host") or "main")
    path = str(entry.get("path") or "/")
    operation = entry.get("operation")
    key = (reason, method, host, shape(path), str(operation))
    d = groups.get(key)
    if d is None:
        d = groups[key] = Denial(
            reason,
            method,
            host,
            key[3],
            operation,
            tuple(entry.get("requiredScopes") or ()),
            entry.get("organization"),
            entry.get("project"),
            entry.get("rule"),
        )
    d.count += 1
    d.report_only += report_only
    if path not in d.examples and len(d.examples) < EXAMPLES:
        d.examples.append(path)


def route_rule(client: str, d: Denial, taken: set[str]) -> dict[str, Any]:
    """A route rule allowing exactly this shape, method and host for this client."""
    words = [s for s in d.path.split("/") if s and not s.startswith(("{", "_"))][-3:]
    hosts = [] if d.host == "main" else [d.host]
    base = "-".join([client, *hosts, d.method.lower(), *words]).lower()
    base = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")[:60] or client
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    match: dict[str, Any] = {"method": d.method, "path": d.path}
    if d.host != "main":
        match["host"] = d.host
    return {"name": name, "match": match, "allow": True, "clients": [client]}


def fix(d: Denial) -> str:
    """What would allow the denied calls, in words."""
    if d.reason == "missing_scope":
        if d.required:
            return "grant " + " or ".join(d.required)
        return "the specification states no scope for it: add a route rule with allow: true"
    if d.reason == "no_matching_operation":
        return "no operation: add a route rule"
    if d.reason == "batch_not_allowed":
        return "batch endpoint: only a route rule with allow: true permits it"
    if d.reason == "organization_not_allowed":
        return (
            f"add {d.organization} to organizations" if d.organization else "names no organization"
        )
    if d.reason == "project_not_allowed":
        if d.organization and d.project:
            return f"add {d.organization}/{d.project} to projects"
        return "organization-wide: a client limited to projects may not call it"
    if d.reason == "route_denied":
        return f"route rule {d.rule!r} denies it"
    if d.reason == "client_not_allowed_on_route":
        return f"route rule {d.rule!r} does not list this client in its clients"
    return "never allowed (SOAP web services)"


def needs_rule(d: Denial) -> bool:
    return d.reason in ("no_matching_operation", "batch_not_allowed") or (
        d.reason == "missing_scope" and not d.required
    )


def summarize(client: str, groups: Iterable[Denial], taken: set[str]) -> list[dict[str, Any]]:
    """The entries of one client, most frequent first, as plain data."""
    out = []
    for d in sorted(groups, key=lambda d: (-d.count, d.reason, d.path, d.method)):
        out.append(
            {
                "reason": d.reason,
                "method": d.method,
                "host": d.host,
                "path": d.path,
                "examples": d.examples,
                "operation": d.operation,
                "requiredScopes": list(d.required),
                "count": d.count,
                "reportOnly": d.report_only,
                "fix": fix(d),
                "routeRule": route_rule(client, d, taken) if needs_rule(d) else None,
            }
        )
    return out


def render(entries: list[dict[str, Any]]) -> list[str]:
    """YAML comment lines listing one client's would-be denials."""
    if not entries:
        return []
    let_through = sum(e["reportOnly"] for e in entries)
    lines = [
        "  # would be denied"
        + (f" ({let_through} let through by report mode)" if let_through else "")
        + ":"
    ]
    for e in entries:
        where = e["path"] if e["host"] == "main" else f"/_hosts/{e['host']}{e['path']}"
        op = f" ({e['operation']})" if e["operation"] else ""
        lines.append(
            f"  #   {e['reason']}: {e['method']} {where}{op}, {e['count']}x: {e['fix']}"
            + (f" (rule {e['routeRule']['name']!r} below)" if e["routeRule"] else "")
        )
    return lines
