"""The one way to get a configuration the gateway can run: load, then check.

`load_checked(path)` is what `run`, a reload and `check` all call. It loads
gateway.yaml and its policy files (`gateway.config.load`), then checks the
policies against the operation catalog (`gateway.policy.check_policy`: scope
names, route templates, ...). Raises ConfigError with every problem from both
steps; warnings from both end up in `Config.warnings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.catalog import Catalog
from gateway.config.load import load
from gateway.config.model import Config
from gateway.errors import ConfigError

PolicyCheck = Callable[[Config, Catalog], tuple[list[str], list[str]]]


def _policy_check() -> PolicyCheck | None:
    from gateway import policy

    check: PolicyCheck | None = getattr(policy, "check_policy", None)
    return check


def load_checked(
    path: str | Path, *, env: Mapping[str, str] | None = None, catalog: Catalog | None = None
) -> Config:
    """Load and fully validate a configuration, or raise ConfigError."""
    config = load(path, env)
    check = _policy_check()
    if check is None:
        return config
    errors, warnings = check(config, catalog or Catalog.builtin())
    all_warnings = [*config.warnings, *warnings]
    if errors:
        raise ConfigError(list(errors), all_warnings)
    return dataclasses.replace(config, warnings=tuple(all_warnings))
