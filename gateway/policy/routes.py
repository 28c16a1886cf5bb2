"""Route rules (`routes:` in policy files), compiled once and matched per request.

A rule's `match` names a host (default `main`; `*` for any), methods (default:
any) and a path template (`{param}` is one segment, a final `**` any number of
segments). A rule is one template, so matching is a single pass over the
segments (literal positions checked first): case-insensitive, on the canonical
path, with no regular expressions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.catalog.trie import Segment, TemplateError, parse_template
from gateway.config.model import Route

ANY = "*"


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    index: int  # position in config.routes (file order)
    rule: Route
    host: str
    methods: frozenset[str] | None  # None: any method
    segments: tuple[Segment, ...]
    literals: tuple[tuple[int, str], ...]  # (position, lower-case text) of literal segments
    min_len: int
    max_len: int | None  # None: ends in '**'

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
        segments = self.segments
        n = len(lowered)
        if n < self.min_len or (self.max_len is not None and n > self.max_len):
            return None
        for i, lit in self.literals:  # cheap rejection first
            if lowered[i] != lit:
                return None
        params: dict[str, str] = {}
        for i, seg in enumerate(segments):
            if seg.kind == "rest":
                params[seg.text] = "/".join(original[i:])
                break
            if seg.kind == "param":
                params[seg.text] = original[i]
            elif seg.kind == "mixed":
                value = lowered[i]
                if not (
                    len(value) > len(seg.prefix) + len(seg.suffix)
                    and value.startswith(seg.prefix)
                    and value.endswith(seg.suffix)
                ):
                    return None
                params[seg.text] = original[i][len(seg.prefix) : len(value) - len(seg.suffix)]
        return params


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
    rest = bool(segments) and segments[-1].kind == "rest"
    return CompiledRoute(
        index=index,
        rule=rule,
        host=rule.match.host,
        methods=route_methods(rule),
        segments=segments,
        literals=tuple((i, s.text) for i, s in enumerate(segments) if s.kind == "literal"),
        min_len=len(segments) - (1 if rest else 0),
        max_len=None if rest else len(segments),
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
