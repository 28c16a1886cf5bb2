"""`azdo-gateway test [-c gateway.yaml] FILE...`: policy tests, offline.

Each test names a caller (a client by name, a gateway key as sent, or the
claims of an Entra ID token), a request, and the decision it must get; the
gateway's own stages decide it (see `gateway.policytest`). No network and no
secret is needed: the configuration is loaded as `check --offline` loads it.
Prints one line per test and, for each failing test, its `file:line`, what was
expected and what was decided; exits 0 when every expectation holds, 1
otherwise (a failing test, a broken test file or configuration). `--json`
prints only JSON on stdout; `--junit FILE` also writes JUnit XML.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET  # noqa: S405 - writing XML, never parsing it
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config.problems import Problem
    from gateway.policytest import Result

HELP = "run policy tests: requests and the decisions they must get (offline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="gateway.yaml", help="default: gateway.yaml")
    p.add_argument("--json", action="store_true", help="print the results as JSON only")
    p.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML")
    p.add_argument("files", nargs="+", metavar="FILE", help="policy test files (YAML)")


def _decided(r: Result) -> str:
    if r.decision is None:
        return r.message
    text = r.decision
    if r.report_only:
        text += " (report mode)"
    text += f": operation {r.operation or 'none'}"
    if r.required_scopes:
        text += f", requires {' or '.join(r.required_scopes)}"
    if r.reason:
        text += f", reason {r.reason}"
    if r.rule:
        text += f", rule {r.rule}"
    return text


def _expected(r: Result) -> str:
    want = r.located.test.expectation
    extra = [x for x in (want.reason, want.operation and f"operation {want.operation}") if x]
    return want.decision + (f" ({', '.join(extra)})" if extra else "")


def _text(results: Sequence[Result]) -> None:
    for r in results:
        where, name = r.located.where(), r.located.test.name
        if r.passed:
            print(f"ok      {where}: {name}")
            continue
        print(f"FAILED  {where}: {name}")
        print(f"        expected  {_expected(r)}")
        print(f"        decided   {_decided(r)}")
        if r.client:
            print(f"        client    {r.client}")
        if r.message and r.decision is not None:
            print(f"        why       {r.message}")
    failed = sum(not r.passed for r in results)
    print(
        f"{len(results)} test{'s' if len(results) != 1 else ''}: "
        f"{len(results) - failed} passed, {failed} failed"
    )


def _junit(results: Sequence[Result], problems: Sequence[Problem], path: str) -> None:
    suites = ET.Element("testsuites", name="azdo-gateway test")
    by_file: dict[str, list[Result]] = {}
    for r in results:
        by_file.setdefault(r.located.file, []).append(r)
    for file, rs in by_file.items():
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=file,
            tests=str(len(rs)),
            failures=str(sum(not r.passed for r in rs)),
            errors="0",
        )
        for r in rs:
            case = ET.SubElement(
                suite,
                "testcase",
                name=r.located.test.name,
                classname=file,
                file=file,
                line=str(r.located.line or 0),
            )
            if not r.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(r.mismatches))
                failure.text = (
                    f"{r.located.where()}: expected {_expected(r)}; decided {_decided(r)}"
                )
    if problems:
        suite = ET.SubElement(
            suites, "testsuite", name="configuration", tests="1", failures="0", errors="1"
        )
        case = ET.SubElement(suite, "testcase", name="load", classname="configuration")
        error = ET.SubElement(case, "error", message=f"{len(problems)} problems")
        error.text = "\n".join(map(str, problems))
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)


def run(args: argparse.Namespace) -> int:
    from gateway.catalog import Catalog
    from gateway.errors import ConfigError
    from gateway.loading import load_checked
    from gateway.policytest import Evaluator, Located, load_tests

    catalog = Catalog.builtin()
    problems: list[Problem] = []
    located: list[Located] = []
    results: list[Result] = []
    try:
        config = load_checked(args.config, catalog=catalog, offline=True)
    except ConfigError as err:
        problems.extend(err.errors)
        config = None
    for file in args.files:
        tests, found = load_tests(file)
        located.extend(tests)
        problems.extend(p for p in found if p.severity == "error")
    if config is not None and not problems:
        evaluator = Evaluator(config, catalog)
        results = [evaluator.evaluate(t) for t in located]
    ok = not problems and all(r.passed for r in results)
    if args.junit:
        _junit(results, problems, args.junit)
    if args.json:
        failed = sum(not r.passed for r in results)
        body: dict[str, Any] = {
            "ok": ok,
            "results": [r.as_dict() for r in results],
            "errors": [p.as_dict() for p in problems],
            "summary": {"tests": len(results), "passed": len(results) - failed, "failed": failed},
        }
        print(json.dumps(body, indent=2))
        return 0 if ok else 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        n = len(problems)
        print(f"{n} problem{'s' if n != 1 else ''} found: no test was run", file=sys.stderr)
        return 1
    _text(results)
    return 0 if ok else 1
