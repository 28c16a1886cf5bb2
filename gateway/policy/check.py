"""`check_policy(config, catalog) -> (errors, warnings)`: policy problems `check` reports.

Errors: unknown scope names (with a did-you-mean), route rules naming unknown
clients, hosts or methods, malformed route paths, `projects` entries that are
not `organization/project`. Warnings: high-privilege grants, grants no
operation uses, route rules that match no operation, `allow: true` rules
open to every client. Every problem names the file, line and key when the
configuration can say where it came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from gateway.catalog import ANY_HOST, Catalog
from gateway.catalog.trie import Segment, TemplateError, parse_template
from gateway.config.model import Config
from gateway.types import Operation

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})


def _locator(config: Config) -> Callable[[tuple[str | int, ...], str], str]:
    locate = getattr(config, "locate", None)

    def where(path: tuple[str | int, ...], fallback: str) -> str:
        if callable(locate):
            try:
                found = locate(path)
                if found:
                    return str(found)
            except (KeyError, IndexError, LookupError, ValueError, TypeError):
                pass
        return f"{config.path}: {fallback}"

    return where


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
        if (
            methods is not None
            and op.method not in methods
            and not (op.method == "GET" and "HEAD" in methods)
        ):
            continue
        if overlaps(segments, catalog.segments.get(op.template) or parse_template(op.template)):
            out.append(op)
    return out


def check_policy(config: Config, catalog: Catalog) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    where = _locator(config)
    names = [c.name for c in config.clients]
    used: set[str] = set()
    for op in catalog.operations:
        used.update(op.scopes)
    for ci, client in enumerate(config.clients):
        label = f"clients[{ci}] ({client.name})"
        for si, scope in enumerate(client.scopes):
            at = where(("clients", ci, "scopes", si), f"{label}.scopes[{si}]")
            problem = _scope_problem(catalog, scope)
            if problem:
                errors.append(f"{at}: {problem}")
                continue
            if catalog.scopes.high_privilege(scope):
                warnings.append(
                    f"{at}: client {client.name!r} is granted high-privilege scope "
                    f"{scope!r}; grant the narrowest scope its operations need"
                )
            if not (catalog.scopes.includes(scope) & used):
                warnings.append(
                    f"{at}: no operation in the catalog needs {scope!r} "
                    "or a scope it includes; the grant has no effect"
                )
        for pi, entry in enumerate(client.projects or ()):
            org, sep, project = entry.partition("/")
            if not sep or not org.strip() or not project.strip() or "/" in project:
                at = where(("clients", ci, "projects", pi), f"{label}.projects[{pi}]")
                errors.append(f"{at}: expected 'organization/project' (name or id), got {entry!r}")
    hosts = set(config.gateway.upstream.hosts) | {ANY_HOST}
    for ri, route in enumerate(config.routes):
        label = f"routes[{ri}] ({route.name})"
        m = route.match
        if m.host not in hosts:
            at = where(("routes", ri, "match", "host"), f"{label}.match.host")
            errors.append(
                f"{at}: unknown host {m.host!r} (upstream.hosts: "
                f"{', '.join(sorted(hosts - {ANY_HOST}))})"
            )
        raw_methods = (m.method,) if isinstance(m.method, str) else (m.method or ())
        bad = [x for x in raw_methods if x.strip().upper() not in METHODS]
        if bad:
            at = where(("routes", ri, "match", "method"), f"{label}.match.method")
            errors.append(
                f"{at}: unknown method {bad[0]!r} (expected one of "
                f"{', '.join(sorted(METHODS - {'*'}))})"
            )
        for ki, cname in enumerate(route.clients or ()):
            if cname not in names:
                at = where(("routes", ri, "clients", ki), f"{label}.clients[{ki}]")
                hint = difflib.get_close_matches(cname, names, n=1, cutoff=0.5)
                errors.append(
                    f"{at}: unknown client {cname!r}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                )
        for si, scope in enumerate(route.scopes):
            problem = _scope_problem(catalog, scope)
            if problem:
                at = where(("routes", ri, "scopes", si), f"{label}.scopes[{si}]")
                errors.append(f"{at}: {problem}")
        at = where(("routes", ri), label)
        try:
            segments = parse_template(m.path.strip())
        except TemplateError as err:
            at = where(("routes", ri, "match", "path"), f"{label}.match.path")
            errors.append(f"{at}: {err}")
            continue
        if route.allow and route.clients is None and not route.deny:
            warnings.append(
                f"{at}: rule {route.name!r} allows every client; name the clients that need it"
            )
        if route.allow or bad or m.host not in hosts:
            continue
        methods = (
            None
            if not raw_methods or "*" in {x.upper() for x in raw_methods}
            else frozenset(x.strip().upper() for x in raw_methods)
        )
        if not _route_ops(catalog, m.host, methods, segments):
            warnings.append(
                f"{at}: rule {route.name!r} matches no operation in the catalog "
                f"({'/'.join(sorted(methods or {'any method'}))} {m.path} "
                f"on host {m.host!r})"
            )
    return errors, warnings
