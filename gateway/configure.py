"""The one way to get a configuration the gateway can run: load, then check.

`load_checked(path)` is what `run`, a reload, `check` and `explain` call. It
loads gateway.yaml and its policy files (`gateway.config.load`), then checks
the policies against the operation catalog (`gateway.policy.check_policy`:
scope names, route templates, ...). Raises ConfigError with every problem from
both steps; warnings from both end up in `Config.warnings`.

When loading finds problems, the catalog checks still run on the part of the
configuration that is valid, so that one run reports everything; a problem at
a key already reported is not reported twice.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from gateway.catalog import Catalog
from gateway.config.load import ConfigProblems, load
from gateway.config.model import Config
from gateway.errors import ConfigError

PolicyCheck = Callable[[Config, Catalog], tuple[list[str], list[str]]]

_WHERE = re.compile(r"^(?P<file>[^:]+?)(?::(?P<line>\d+))?: (?P<rest>.*)$", re.DOTALL)
# Checks that depend on something which failed to load: not reported again.
_DEPENDENT = re.compile(r"^routes\[\d+\]\.(clients\[\d+\]|match\.host)$")


def _policy_check() -> PolicyCheck | None:
    from gateway import policy

    check: PolicyCheck | None = getattr(policy, "check_policy", None)
    return check


def _where(problem: str) -> tuple[str, int, str]:
    """(file, line, key) of a "file:line: key: message" problem; 0 and "" when absent."""
    m = _WHERE.match(problem)
    if m is None:
        return problem, 0, ""
    key, sep, _ = m["rest"].partition(": ")
    return m["file"], int(m["line"] or 0), key if sep and " " not in key else ""


def _same_place(a: str, b: str) -> bool:
    """One key is the other, or inside it (routes[2].match.method[1] and routes[2].match.method)."""
    short, long = sorted((a, b), key=len)
    return bool(short) and (long == short or long.startswith((short + ".", short + "[")))


def _merge(config: Config, first: list[str], more: Iterable[str]) -> list[str]:
    """`first` plus the problems of `more` at places not already reported, by file and line."""
    taken = [(_where(p)[0], _where(p)[2]) for p in first]
    merged = list(first)
    for problem in more:
        file, _, key = _where(problem)
        if not any(file == f and _same_place(key, k) for f, k in taken):
            merged.append(problem)
    order = {name: i for i, name in enumerate(config.sources.files)}
    return sorted(merged, key=lambda p: (order.get(_where(p)[0], len(order)), _where(p)[1]))


def load_checked(
    path: str | Path, *, env: Mapping[str, str] | None = None, catalog: Catalog | None = None
) -> Config:
    """Load and fully validate a configuration, or raise ConfigError."""
    check = _policy_check()
    try:
        config = load(path, env)
    except ConfigProblems as err:
        partial = err.partial
        if check is None or partial is None:
            raise
        errors, warnings = check(partial, catalog or Catalog.builtin())
        src = partial.sources
        if src.broken_clients or "upstream" in src.broken_sections:
            errors = [e for e in errors if not _DEPENDENT.match(_where(e)[2])]
        raise ConfigError(
            _merge(partial, err.problems, errors), _merge(partial, err.warnings, warnings)
        ) from None
    if check is None:
        return config
    errors, warnings = check(config, catalog or Catalog.builtin())
    all_warnings = [*config.warnings, *warnings]
    if errors:
        raise ConfigError(list(errors), all_warnings)
    return dataclasses.replace(config, warnings=tuple(all_warnings))
