"""Azure DevOps OAuth scopes and what each one includes.

Takes the generated `scopes.yaml` rows; answers which scopes a set of grants
amounts to (`vso.code_manage` includes `vso.code_write`, which includes
`vso.code`, ... transitively; `user_impersonation` includes every scope), and
suggests the closest known name for a misspelt one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

EVERYTHING = "user_impersonation"


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    description: str = ""
    category: str = ""
    title: str = ""
    high_privilege: bool = False
    includes: tuple[str, ...] = ()  # the scopes this one grants too (directly)


class Scopes:
    """The known scopes and their inclusion closure, computed once."""

    def __init__(self, scopes: Iterable[Scope]) -> None:
        self.by_name: Mapping[str, Scope] = {s.name: s for s in scopes}
        self._closure = {name: self._walk(name) for name in self.by_name}

    def _walk(self, name: str) -> frozenset[str]:
        if name == EVERYTHING:
            return frozenset(self.by_name)
        seen: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            scope = self.by_name.get(current)
            if scope is not None:
                todo.extend(scope.includes)
        return frozenset(seen)

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __len__(self) -> int:
        return len(self.by_name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_name)

    def includes(self, name: str) -> frozenset[str]:
        """Every scope `name` grants, itself included."""
        return self._closure.get(name, frozenset({name}))

    def closure(self, granted: Iterable[str]) -> frozenset[str]:
        """Every scope a client granted `granted` effectively holds."""
        out: set[str] = set()
        for name in granted:
            out |= self.includes(name)
        return frozenset(out)

    def included_by(self, name: str) -> tuple[str, ...]:
        """The scopes that grant `name` (itself first), for messages."""
        wider = sorted(s for s, closure in self._closure.items() if name in closure and s != name)
        return (name, *wider)

    def high_privilege(self, name: str) -> bool:
        scope = self.by_name.get(name)
        return bool(scope and scope.high_privilege)

    def suggest(self, name: str) -> str | None:
        """The closest known scope name, for "did you mean" hints."""
        lowered = name.strip().lower()
        if lowered in self.by_name:
            return lowered
        if f"vso.{lowered}" in self.by_name:
            return f"vso.{lowered}"
        close = difflib.get_close_matches(lowered, list(self.by_name), n=1, cutoff=0.6)
        return close[0] if close else None
