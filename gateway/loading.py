"""The one way to get a configuration the gateway can run: load, then check.

`load_checked(path)` is what `run`, a reload, `check`, `explain`, `keys` and
`test` call. It loads gateway.yaml and its policy files (`gateway.config.load`),
then checks the policies against the operation catalog
(`gateway.policy.check_policy`: scope names, route templates, ...). Raises
ConfigError with every problem from both steps, typed (`Problem`); warnings
and notes of a configuration that loads end up in `Config.problems`.

When loading finds problems, the catalog checks still run on the part of the
configuration that is valid, so that one run reports everything; a problem at
a key already reported is not reported twice. A warning whose code the client
or route it is about lists in `acknowledge` is dropped (kept, for `check`'s
count, in `Config.acknowledged`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from gateway.catalog import Catalog
from gateway.config.load import ConfigProblems, load
from gateway.config.model import Config
from gateway.config.problems import Problem, same_place
from gateway.errors import ConfigError

PolicyCheck = Callable[[Config, Catalog], list[Problem]]

# Checks that depend on something which failed to load: not reported again.
_DEPENDENT = re.compile(r"^routes\[\d+\]\.(clients\[\d+\]|match\.host)$")


def _policy_check() -> PolicyCheck | None:
    from gateway import policy

    check: PolicyCheck | None = getattr(policy, "check_policy", None)
    return check


def _merge(config: Config, first: list[Problem], more: Iterable[Problem]) -> list[Problem]:
    """`first` plus the problems of `more` at places not already reported, by file and line."""
    taken = [(p.file, p.key) for p in first if p.severity == "error"]
    merged = list(first)
    for problem in more:
        if problem.severity != "error" or not any(
            problem.file == f and same_place(problem.key, k) for f, k in taken
        ):
            merged.append(problem)
    order = {name: i for i, name in enumerate(config.sources.files)}
    return sorted(merged, key=lambda p: (order.get(p.file, len(order)), p.line or 0))


def acknowledged(config: Config, problem: Problem) -> bool:
    """Is `problem` a warning that the client or route it is about acknowledges?"""
    if problem.severity != "warning" or len(problem.path) < 2:
        return False
    kind, index = problem.path[0], problem.path[1]
    items = config.clients if kind == "clients" else config.routes if kind == "routes" else ()
    if not isinstance(index, int) or not 0 <= index < len(items):
        return False
    return problem.code in items[index].acknowledge


def load_checked(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    catalog: Catalog | None = None,
    offline: bool = False,
) -> Config:
    """Load and fully validate a configuration, or raise ConfigError.

    `offline`: secrets need not be there (see `gateway.config.load.load`).
    """
    check = _policy_check()
    try:
        config = load(path, env, offline=offline)
    except ConfigProblems as err:
        partial = err.partial
        if check is None or partial is None:
            raise
        more = check(partial, catalog or Catalog.builtin())
        src = partial.sources
        if src.broken_clients or "upstream" in src.broken_sections:
            more = [p for p in more if not _DEPENDENT.match(p.key)]
        merged = _merge(partial, list(err.problems), more)
        raise ConfigError([p for p in merged if not acknowledged(partial, p)]) from None
    problems = list(config.problems)
    if check is not None:
        problems = _merge(config, problems, check(config, catalog or Catalog.builtin()))
    if any(p.severity == "error" for p in problems):
        raise ConfigError([p for p in problems if not acknowledged(config, p)])
    return dataclasses.replace(
        config,
        problems=tuple(p for p in problems if not acknowledged(config, p)),
        acknowledged=tuple(p for p in problems if acknowledged(config, p)),
    )
