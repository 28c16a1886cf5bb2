"""Broken configurations and the exact output of `azdo-gateway check` for each.

Every case in tests/data/configs/*.yaml holds the files to write (`files`:
name -> text, null for a directory, {latin1: text} for non-UTF-8 bytes),
optional environment variables (`env`), extra arguments to `check` (`args`,
e.g. [--json]), the expected exit code (`exit`, default 1) and the exact text
`check` prints (`output`), compared word for word (but for the size of the
catalog, written `N catalog operations`).

The catalog checks of `gateway.policy.check_policy` (scope names, rules that
match no operation), which `check` adds to these, are switched off here unless
a case says `catalog_checks: true`: their messages are tested with the policy,
and these stay about the files themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import gateway.policy
from gateway.cli import main

CASES = sorted((Path(__file__).parent.parent / "data" / "configs").glob("*.yaml"))


def _case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    return case


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_check_output(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case = _case(path)
    for text in case["files"].values():  # variables the case relies on being unset
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", str(text)):
            monkeypatch.delenv(name, raising=False)
    for name, text in case["files"].items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            target.mkdir(exist_ok=True)
        elif isinstance(text, dict):
            target.write_bytes(text["latin1"].encode("latin-1"))
        else:
            target.write_text(text)
    for name, value in (case.get("env") or {}).items():
        monkeypatch.setenv(name, value)
    if not case.get("catalog_checks"):
        monkeypatch.delattr(gateway.policy, "check_policy", raising=False)
    monkeypatch.chdir(tmp_path)
    code = main(["check", "-c", case.get("config", "gateway.yaml"), *case.get("args", [])])
    out = capsys.readouterr().out
    out = re.sub(r"\b\d+ catalog operations$", "N catalog operations", out, flags=re.M)
    assert out == case["output"]
    assert code == case.get("exit", 1)


def test_cases_exist() -> None:
    assert len(CASES) >= 30


def test_every_warning_code_is_documented() -> None:
    """docs/configuration.md's table of warning codes is WARNINGS, no more, no less."""
    from gateway.config.problems import WARNINGS

    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    table = text.split("| Code | Warns about |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)
    assert sorted(documented) == sorted(WARNINGS), "add the code to docs/configuration.md"


def test_every_warning_raised_has_a_known_code() -> None:
    """The code of every warning the gateway raises is one `acknowledge` takes: the last
    argument of `sources.warning(...)` (and of its local aliases `warn`, `warning`)."""
    import ast

    from gateway.config.problems import WARNINGS

    used = set()
    for path in (Path(__file__).parents[2] / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) != 3:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            code = node.args[2]
            if name in ("warning", "warn") and isinstance(code, ast.Constant):
                used.add(code.value)
    assert len(used) >= 12, sorted(used)  # the walk still finds them
    assert used <= set(WARNINGS), sorted(used - set(WARNINGS))
