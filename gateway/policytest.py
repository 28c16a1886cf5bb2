"""Policy tests: requests and the decisions they must get, evaluated offline.

`load_tests(path)` reads a test file (`gateway.config.policytest`) with the
same line-numbered problems as a policy file; `evaluate(config, catalog, test)`
decides one test's request exactly as `run` would, through the same functions
`run` and `explain` use: the gateway key or the Entra ID claims go through the
authenticators' own mapping (`ApiKeyAuthenticator.verify`,
`EntraAuthenticator.identify`), then `explain` canonicalizes, matches and
authorizes (route rules, organizations, projects, scopes, report mode). Nothing
is sent anywhere and no secret is needed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.authn.api_key import ApiKeyAuthenticator
from gateway.authn.entra import EntraAuthenticator
from gateway.catalog import Catalog
from gateway.commands.explain import NotUpstream, explain
from gateway.config.load import display
from gateway.config.messages import problems_from
from gateway.config.model import Config
from gateway.config.policytest import PolicyTest, PolicyTestFile
from gateway.config.problems import Problem
from gateway.config.reader import read
from gateway.errors import Denied, Unauthenticated


@dataclass(frozen=True, slots=True)
class Located:
    """A test and where it is written: the line of its `- name:`."""

    test: PolicyTest
    file: str
    line: int | None

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Result:
    located: Located
    passed: bool
    decision: str | None  # "allow" or "deny"; None when the test could not be decided
    reason: str | None
    status: int | None  # what the gateway would answer with itself (200: forwarded)
    client: str | None
    operation: str | None  # catalog operation id
    required_scopes: tuple[str, ...]
    report_only: bool
    rule: str | None
    message: str
    mismatches: tuple[str, ...]  # what did not hold, e.g. "decision: expected deny, got allow"

    @classmethod
    def undecided(cls, located: Located, client: str | None, why: str) -> Result:
        """A test whose request could not be decided (an unknown client, a foreign host)."""
        return cls(located, False, None, None, None, client, None, (), False, None, why, (why,))

    def as_dict(self) -> dict[str, Any]:
        test = self.located.test
        expected = test.expectation
        return {
            "name": test.name,
            "file": self.located.file,
            "line": self.located.line,
            "passed": self.passed,
            "decision": self.decision,
            "reason": self.reason,
            "operation": self.operation,
            "requiredScopes": list(self.required_scopes),
            "client": self.client,
            "status": self.status,
            "reportOnly": self.report_only,
            "rule": self.rule,
            "message": self.message,
            "expected": expected.model_dump(exclude_none=True),
            "mismatches": list(self.mismatches),
        }


def load_tests(
    path: str | Path, env: Mapping[str, str] | None = None
) -> tuple[list[Located], list[Problem]]:
    """The tests of one file, and every problem found in it (each test checked on its own)."""
    doc = read(Path(path), display(path), os.environ if env is None else env)
    problems = list(doc.problems)
    tests: list[Located] = []
    if doc.data is None:
        if doc.empty:
            problems.append(Problem(doc.file, None, "", "the file is empty (expected `tests:`)"))
        return tests, problems
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("tests"), list):
        try:
            PolicyTestFile.model_validate(doc.data)
        except ValidationError as err:
            problems.extend(problems_from(err, PolicyTestFile, doc.data, doc))
        return tests, problems
    try:
        PolicyTestFile.model_validate({**doc.data, "tests": []})
    except ValidationError as err:  # unknown top-level keys; `tests: []` itself is fine below
        problems.extend(
            p for p in problems_from(err, PolicyTestFile, doc.data, doc) if p.key != "tests"
        )
    if not doc.data["tests"]:
        problems.append(Problem(doc.file, doc.lines.get(("tests",)), "tests", "holds no tests"))
    for i, item in enumerate(doc.data["tests"]):
        try:
            test = PolicyTest.model_validate(item)
        except ValidationError as err:
            problems.extend(problems_from(err, PolicyTest, item, doc, ("tests", i)))
            continue
        tests.append(Located(test, doc.file, doc.lines.get(("tests", i))))
    problems.sort(key=lambda p: p.line or 0)
    return tests, problems


class Evaluator:
    """Decides tests against one configuration, as the gateway built from it would."""

    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.keys = ApiKeyAuthenticator(config)
        self.entra = EntraAuthenticator(config)

    def evaluate(self, located: Located) -> Result:
        test = located.test
        try:
            client = self._client(test)
        except (Unauthenticated, Denied) as err:
            return self._result(
                located,
                {
                    "decision": "deny",
                    "reason": err.reason,
                    "status": err.status,
                    "message": err.message,
                },
            )
        except LookupError as err:
            return Result.undecided(located, None, str(err.args[0]))
        try:
            x = explain(
                self.config, self.catalog, client, test.method, test.url, list(test.headers.items())
            )
        except NotUpstream as err:  # a request no one can send through this gateway
            return Result.undecided(located, client, str(err))
        d = x["decision"]
        op = x.get("operation")
        return self._result(
            located,
            {
                "decision": "allow" if d["allowed"] else "deny",
                "reason": d["reason"],
                "status": 200 if d["allowed"] else d["status"],
                "message": d["message"] or "",
                "client": client,
                "operation": op["id"] if op else None,
                "requiredScopes": tuple(x.get("requiredScopes") or ()),
                "reportOnly": d["reportOnly"],
                "rule": d["rule"],
            },
        )

    def _client(self, test: PolicyTest) -> str:
        """The policy client the test's caller is; raises as authentication would."""
        if test.key is not None:
            return self.keys.verify(test.key).client
        if test.entra is not None:
            claims: dict[str, Any] = test.entra.model_dump(exclude_none=True)
            claims["groups"] = list(test.entra.groups)  # a JSON array in a token
            return self.entra.identify(claims).client
        assert test.client is not None
        if self.config.client(test.client) is None:
            names = [c.name for c in self.config.clients]
            hint = difflib.get_close_matches(test.client, names, n=1, cutoff=0.5)
            raise LookupError(
                f"unknown client {test.client!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; clients: {', '.join(names) or 'none'}"
            )
        return test.client

    @staticmethod
    def _result(located: Located, got: dict[str, Any]) -> Result:
        want = located.test.expectation
        mismatches = []
        for field, expected in (
            ("decision", want.decision),
            ("reason", want.reason),
            ("operation", want.operation),
        ):
            if expected is not None and got.get(field) != expected:
                mismatches.append(f"{field}: expected {expected}, got {got.get(field) or '-'}")
        return Result(
            located=located,
            passed=not mismatches,
            decision=got["decision"],
            reason=got.get("reason"),
            status=got.get("status"),
            client=got.get("client"),
            operation=got.get("operation"),
            required_scopes=got.get("requiredScopes", ()),
            report_only=bool(got.get("reportOnly")),
            rule=got.get("rule"),
            message=got.get("message", ""),
            mismatches=tuple(mismatches),
        )
