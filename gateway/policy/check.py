"""`check_policy(config, catalog) -> [Problem]`: policy problems `check` reports.

Errors: unknown scope names (with a did-you-mean), route rules naming unknown
clients, hosts or methods, malformed route paths, `projects` entries that are
not `organization/project`. Warnings: high-privilege grants, grants no
operation uses, route rules that match no operation, `allow: true` rules
open to every client. Every problem names the file, line and key when the
configuration can say where it came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from gateway.catalog import ANY_HOST, Catalog
from gateway.catalog.trie import Segment, TemplateError, parse_template
from gateway.config.model import Config
from gateway.config.problems import PathKey, Problem
from gateway.types import Operation

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})


def _scope_problem(catalog: Catalog, scope: str) -> str | None:
    if scope in catalog.scopes:
        return None
    hint = catalog.scopes.suggest(scope)
    return f"unknown scope {scope!r}" + (f" (did you mean {hint!r}?)" if hint else "")


def overlaps(a: Sequence[Segment], b: Sequence[Segment]) -> bool:
    """Can some path match both templates?"""
    i = 0
    while True:
        if i == len(a) or i == len(b):
            rest_a = len(a) > i and a[i].kind == "rest"
            rest_b = len(b) > i and b[i].kind == "rest"
            return (i == len(a) and i == len(b)) or rest_a or rest_b
        x, y = a[i], b[i]
        if x.kind == "rest" or y.kind == "rest":
            return True
        if x.kind == "literal" and y.kind == "literal" and x.text != y.text:
            return False
        for lit, pat in ((x, y), (y, x)):
            if (
                lit.kind == "literal"
                and pat.kind == "mixed"
                and not (lit.text.startswith(pat.prefix) and lit.text.endswith(pat.suffix))
            ):
                return False
        i += 1


def _route_ops(
    catalog: Catalog, host: str, methods: frozenset[str] | None, segments: Sequence[Segment]
) -> list[Operation]:
    out = []
    for op in catalog.operations:
        if host != ANY_HOST and op.host not in (host, ANY_HOST):
            continue
        if op.deny_reason == "soap_not_supported":
            # the SOAP catch-all (/{organization}/_ws/**) overlaps nearly every path, and
            # SOAP is denied whatever the rules say: overlapping it is matching nothing
            continue
        if (
            methods is not None
            and op.method not in methods
            and not (op.method == "GET" and "HEAD" in methods)
        ):
            continue
        if overlaps(segments, catalog.segments.get(op.template) or parse_template(op.template)):
            out.append(op)
    return out


def check_policy(config: Config, catalog: Catalog) -> list[Problem]:
    """Every policy problem found against `catalog`: errors and warnings."""
    out: list[Problem] = []
    error, warning = config.sources.problem, config.sources.warning
    names = [c.name for c in config.clients]
    used: set[str] = set()
    for op in catalog.operations:
        used.update(op.scopes)
    for ci, client in enumerate(config.clients):
        for si, scope in enumerate(client.scopes):
            at: PathKey = ("clients", ci, "scopes", si)
            problem = _scope_problem(catalog, scope)
            if problem:
                out.append(error(at, problem, code="unknown_scope"))
                continue
            if catalog.scopes.high_privilege(scope):
                message = (
                    f"client {client.name!r} is granted high-privilege scope "
                    f"{scope!r}; grant the narrowest scope its operations need"
                )
                out.append(warning(at, message, "high_privilege_scope"))
            if not (catalog.scopes.includes(scope) & used):
                message = (
                    f"no operation in the catalog needs {scope!r} "
                    "or a scope it includes; the grant has no effect"
                )
                out.append(warning(at, message, "unused_scope"))
        for pi, entry in enumerate(client.projects or ()):
            org, sep, project = entry.partition("/")
            if not sep or not org.strip() or not project.strip() or "/" in project:
                message = f"expected 'organization/project' (name or id), got {entry!r}"
                out.append(error(("clients", ci, "projects", pi), message))
    hosts = set(config.gateway.upstream.hosts) | {ANY_HOST}
    for ri, route in enumerate(config.routes):
        m = route.match
        if m.host not in hosts:
            message = (
                f"unknown host {m.host!r} (upstream.hosts: {', '.join(sorted(hosts - {ANY_HOST}))})"
            )
            out.append(error(("routes", ri, "match", "host"), message, code="unknown_host"))
        raw_methods = (m.method,) if isinstance(m.method, str) else (m.method or ())
        bad = [x for x in raw_methods if x.strip().upper() not in METHODS]
        if bad:
            message = (
                f"unknown method {bad[0]!r} (expected one of {', '.join(sorted(METHODS - {'*'}))})"
            )
            out.append(error(("routes", ri, "match", "method"), message, code="unknown_method"))
        for ki, cname in enumerate(route.clients or ()):
            if cname not in names:
                hint = difflib.get_close_matches(cname, names, n=1, cutoff=0.5)
                message = f"unknown client {cname!r}" + (
                    f" (did you mean {hint[0]!r}?)" if hint else ""
                )
                out.append(error(("routes", ri, "clients", ki), message, code="unknown_client"))
        for si, scope in enumerate(route.scopes):
            problem = _scope_problem(catalog, scope)
            if problem:
                out.append(error(("routes", ri, "scopes", si), problem, code="unknown_scope"))
        try:
            segments = parse_template(m.path.strip())
        except TemplateError as err:
            out.append(error(("routes", ri, "match", "path"), str(err), code="bad_template"))
            continue
        if route.allow and route.clients is None and not route.deny:
            message = f"rule {route.name!r} allows every client; name the clients that need it"
            out.append(warning(("routes", ri), message, "route_allows_every_client"))
        if route.allow or bad or m.host not in hosts:
            continue
        methods = (
            None
            if not raw_methods or "*" in {x.upper() for x in raw_methods}
            else frozenset(x.strip().upper() for x in raw_methods)
        )
        if not _route_ops(catalog, m.host, methods, segments):
            message = (
                f"rule {route.name!r} matches no operation in the catalog "
                f"({'/'.join(sorted(methods or {'any method'}))} {m.path} "
                f"on host {m.host!r})"
            )
            out.append(warning(("routes", ri), message, "route_matches_nothing"))
    return out
