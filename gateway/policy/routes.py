"""Route rules (`routes:` in policy files), compiled once and matched per request.

A rule's `match` names a host (default `main`; `*` for any), methods (default:
any) and a path template (`{param}` is one segment, a final `**` any number of
segments). Matching uses the catalog's segment trie: case-insensitive, on the
canonical path, with no regular expressions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.catalog.trie import TemplateError, Trie, parse_template
from gateway.config.model import Route

ANY = "*"


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    index: int  # position in config.routes (file order)
    rule: Route
    host: str
    methods: frozenset[str] | None  # None: any method
    trie: Trie
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.rule.name

    def match(
        self, host: str, method: str, lowered: Sequence[str], original: Sequence[str]
    ) -> Mapping[str, str] | None:
        """The bound parameters if this rule applies to the request, else None."""
        if self.host != ANY and self.host.lower() != host.lower():
            return None
        if self.methods is not None and method not in self.methods:
            return None
        found = self.trie.match(lowered, original)
        if found is None:
            return None
        return dict(zip(self.names, found[1], strict=False))


def route_methods(rule: Route) -> frozenset[str] | None:
    method = rule.match.method
    if method is None:
        return None
    methods = (method,) if isinstance(method, str) else method
    upper = frozenset(m.strip().upper() for m in methods)
    return None if ANY in upper else upper


def compile_route(index: int, rule: Route) -> CompiledRoute:
    """Raise TemplateError when the path template is malformed."""
    segments = parse_template(rule.match.path.strip())
    trie = Trie()
    trie.add(segments, rule.name)
    return CompiledRoute(
        index=index,
        rule=rule,
        host=rule.match.host,
        methods=route_methods(rule),
        trie=trie,
        names=tuple(s.text for s in segments if s.kind != "literal"),
    )


def compile_routes(rules: Sequence[Route]) -> tuple[tuple[CompiledRoute, ...], list[str]]:
    """Compiled rules, and a problem for every rule that could not be compiled."""
    out: list[CompiledRoute] = []
    problems: list[str] = []
    for i, rule in enumerate(rules):
        try:
            out.append(compile_route(i, rule))
        except TemplateError as err:
            problems.append(f"routes[{i}] ({rule.name}): match.path: {err}")
    return tuple(out), problems


__all__ = ["CompiledRoute", "TemplateError", "compile_route", "compile_routes"]
