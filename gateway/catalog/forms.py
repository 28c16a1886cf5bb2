"""Optional path segments: every form an operation answers to.

The specifications mark a path parameter `"x-ms-required": false` when Azure
DevOps also routes the request without that segment: `/{organization}/{project}/
_apis/git/repositories` is answered at `/{organization}/_apis/git/repositories`
too (every repository of the organization), and `/{organization}/{project}/
{team}/_apis/wit/wiql` at `/{organization}/{project}/_apis/wit/wiql` and
`/{organization}/_apis/wit/wiql`. `forms` derives every such form from the spec
data; `resolve` decides which operation a path belongs to when two of them
produce the same template.

Two templates are the same when they match the same paths: their literals
(case-insensitively) and parameter positions agree, whatever the parameters are
called. Resolution, in order, and why:

1. Within one operation, leaving out different segments can give one shape:
   `/{organization}/{project}/{team}/...` without `team` and without `project`
   are both `/{o}/{x}/...`. Azure DevOps binds route values by position, so the
   segment is the earlier parameter (`project`): the form that keeps the earlier
   segments is kept.
2. A form never takes a path that is some operation's full template: that
   operation is what the path is documented as, and Azure DevOps routes it there.
3. Between forms of different operations, the one that leaves out fewer
   segments wins (it is the nearer reading of the path), then the operation
   sorted first (area, id): arbitrary but stable, and every case is listed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ANY_HOST = "*"
MAX_OPTIONAL = 4  # segments one operation may leave out: 2**4 forms at most


class _Op(Protocol):
    id: str
    area: str
    host: str
    method: str
    path: str
    forms: list[tuple[str, tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class Collision:
    host: str
    method: str
    form: str  # the template that was not kept
    of: str  # the operation whose form it was
    omits: tuple[str, ...]  # the segments that form leaves out
    taken_by: str  # the operation the path belongs to
    why: str

    def line(self) -> str:
        return (
            f"{self.method} {self.form} (host {self.host}; {self.of} without "
            f"{', '.join(self.omits)}) is {self.taken_by}: {self.why}"
        )


def optional_path_params(doc: Mapping[str, Any], *params: Iterable[Any]) -> list[str]:
    """Names of the path parameters marked `"x-ms-required": false` (`$ref`s resolved)."""
    shared = doc.get("parameters") or {}
    out: list[str] = []
    for group in params:
        for p in group or ():
            if isinstance(p, dict) and "$ref" in p:
                p = shared.get(str(p["$ref"]).rsplit("/", 1)[-1], {})
            if not isinstance(p, dict) or p.get("in") != "path":
                continue
            if p.get("x-ms-required") is False and p.get("name") not in out:
                out.append(str(p["name"]))
    return out


def shape(template: str) -> tuple[str, ...]:
    """What a template matches: lower-case literals, `{}` for each parameter."""
    out = []
    for seg in template.strip("/").split("/") if template.strip("/") else []:
        opening, closing = seg.find("{"), seg.find("}")
        if opening < 0 or closing < opening:
            out.append(seg.lower())
        else:
            out.append(seg[:opening].lower() + "{}" + seg[closing + 1 :].lower())
    return tuple(out)


def forms(template: str, optional: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(template, omitted names) for every way of leaving optional segments out.

    Only a parameter that is a whole segment can be left out. The full template
    is not among them; forms of one shape are reduced to one (rule 1).
    """
    segments = template.split("/")
    where = [i for i, s in enumerate(segments) if s[1:-1] in set(optional) and s[0] + s[-1] == "{}"]
    if len(where) > MAX_OPTIONAL:
        raise ValueError(f"{template}: more than {MAX_OPTIONAL} optional segments")
    out: list[tuple[str, tuple[str, ...]]] = []
    seen = {shape(template)}
    for n in range(1, len(where) + 1):
        # later segments first: the form that keeps the earlier ones wins its shape
        for left_out in sorted(itertools.combinations(where, n), reverse=True):
            form = "/".join(s for i, s in enumerate(segments) if i not in left_out) or "/"
            key = shape(form)
            if key not in seen:
                seen.add(key)
                out.append((form, tuple(segments[i][1:-1] for i in left_out)))
    return out


def _hosts_meet(a: str, b: str) -> bool:
    return a == b or ANY_HOST in (a, b)


def resolve(ops: list[Any]) -> list[Collision]:
    """Drop every form whose path belongs to another operation (rules 2 and 3).

    `ops` are objects with id, area, host, method, path and a `forms` list of
    (template, omitted) pairs; their `forms` are edited in place.
    """
    by_key: dict[tuple[str, tuple[str, ...]], list[tuple[Any, str, tuple[str, ...]]]] = {}
    for op in ops:
        by_key.setdefault((op.method, shape(op.path)), []).append((op, op.path, ()))
        for form, omits in op.forms:
            by_key.setdefault((op.method, shape(form)), []).append((op, form, omits))
    collisions: list[Collision] = []
    losers: set[tuple[int, str]] = set()
    for group in by_key.values():
        if len(group) < 2:
            continue
        ranked = sorted(group, key=lambda c: (len(c[2]), c[0].area, c[0].id, c[0].host))
        for i, (op, form, omits) in enumerate(ranked):
            if not omits:
                continue
            winner = next(
                (w for w in ranked[:i] if _hosts_meet(w[0].host, op.host) and w[0] is not op),
                None,
            )
            if winner is None:
                continue
            why = (
                "its full template"
                if not winner[2]
                else f"its form without {', '.join(winner[2])}, which leaves out fewer segments"
                if len(winner[2]) < len(omits)
                else "an operation sorted before (same number of segments left out)"
            )
            host = op.host if op.host != ANY_HOST else winner[0].host
            collisions.append(Collision(host, op.method, form, op.id, omits, winner[0].id, why))
            losers.add((id(op), form))
    for op in ops:
        op.forms = [(f, o) for f, o in op.forms if (id(op), f) not in losers]
    return sorted(collisions, key=lambda c: (c.of, c.form, c.method))
