"""`azdo-gateway test`, `check --strict/--json/--offline` and `keys`, run as a user runs them:
the installed console script, in a subprocess, on configurations written for each case."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET  # noqa: S405 - parsing the XML our own command wrote
from pathlib import Path
from typing import Any

import yaml

from tests.harness import new_key

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "azdo-gateway"
SECRET_VARS = ("BUILD_SP_", "GATEWAY_APP_", "PLATFORM_MI_", "AZDO_GATEWAY_", "AZURE_", "TEST_")


def azdo_gateway(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(SECRET_VARS)}
    clean.update(env or {})
    return subprocess.run(  # noqa: S603 - our own console script
        [str(SCRIPT), *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=120
    )


KEY, DIGEST = new_key()
OLD_KEY, OLD_DIGEST = new_key()


def _in(days: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()


def write(
    tmp_path: Path, *, gateway: dict[str, Any] | None = None, tests: str | None = None
) -> Path:
    """gateway.yaml (secrets from unset variables and absent files) and one policy file."""
    doc: dict[str, Any] = {
        "identity": {"tenant_id": "${TEST_TENANT_ID}", "audiences": ["api://gw"]},
        "credentials": {
            "build-sp": {
                "type": "client_secret",
                "client_id": "app",
                "client_secret": "${TEST_BUILD_SP_SECRET}",
            },
            "server": {"type": "pat", "pat_file": str(tmp_path / "absent" / "pat")},
        },
        "policies": ["policies/*.yaml"],
    }
    doc.update(gateway or {})
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "policies").mkdir(exist_ok=True)
    clients = [
        {
            "name": "ci",
            "credential": "build-sp",
            "scopes": ["vso.code", "vso.build_execute"],
            "organizations": ["fabrikam"],
            "acknowledge": ["high_privilege_scope"],  # queuing builds is its job
            "api_keys": [
                {"id": "ci-2026b", "sha256": DIGEST, "expires": _in(5)},
                {"id": "ci-2026a", "sha256": OLD_DIGEST, "expires": _in(-1)},
            ],
        },
        {
            "name": "reader",
            "credential": "server",
            "scopes": ["vso.code"],
            "entra": {"groups": ["g-readers"]},
        },
    ]
    routes = [{"name": "no-deletes", "match": {"method": "DELETE", "path": "/**"}, "deny": True}]
    (tmp_path / "policies" / "p.yaml").write_text(
        yaml.safe_dump({"clients": clients, "routes": routes})
    )
    if tests is not None:
        (tmp_path / "tests.yaml").write_text(tests)
    return tmp_path / "gateway.yaml"


BUILDS = "https://dev.azure.com/fabrikam/Fiber/_apis/build/builds?api-version=7.1"
PASSING = f"""\
tests:
  - name: ci queues a build
    client: ci
    request: POST {BUILDS}
    expect: allow
  - name: the new key is ci
    key: {KEY}
    request: POST {BUILDS}
    expect: {{decision: allow, operation: build.Builds_Queue}}
  - name: the old key has expired
    key: {OLD_KEY}
    request: GET https://dev.azure.com/fabrikam/_apis/projects
    expect: {{decision: deny, reason: key_expired}}
  - name: a key nobody has
    key: azgw_not_a_key_of_anyone
    request: GET https://dev.azure.com/fabrikam/_apis/projects
    expect: {{decision: deny, reason: unknown_key}}
  - name: a reader's token maps to reader, which may not queue builds
    entra: {{groups: [g-readers]}}
    request: POST {BUILDS}
    expect: {{decision: deny, reason: missing_scope}}
  - name: nobody deletes
    client: ci
    request: DELETE https://dev.azure.com/fabrikam/Fiber/_apis/git/repositories/app
    expect: {{decision: deny, reason: route_denied}}
"""

FAILING = f"""\
tests:
  - name: ci queues a build
    client: ci
    request: POST {BUILDS}
    expect: allow

  - name: the reader may queue builds
    entra: {{groups: [g-readers]}}
    request: POST {BUILDS}
    expect: allow
  - name: ci is denied builds
    client: ci
    request: POST {BUILDS}
    expect: {{decision: deny, reason: missing_scope}}
"""


def test_passing_tests_exit_0_without_any_secret(tmp_path: Path) -> None:
    write(tmp_path, tests=PASSING)
    done = azdo_gateway("test", "-c", "gateway.yaml", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "6 tests: 6 passed, 0 failed"
    assert "ok      tests.yaml:2: ci queues a build" in done.stdout
    assert KEY not in done.stdout + done.stderr


def test_failing_tests_exit_1_naming_file_line_expected_and_decided(tmp_path: Path) -> None:
    write(tmp_path, tests=FAILING)
    done = azdo_gateway("test", "-c", "gateway.yaml", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    at = lines.index("FAILED  tests.yaml:7: the reader may queue builds")
    assert lines[at + 1 : at + 4] == [
        "        expected  allow",
        "        decided   deny: operation build.Builds_Queue, requires vso.build_execute, "
        "reason missing_scope",
        "        client    reader",
    ]
    at = lines.index("FAILED  tests.yaml:11: ci is denied builds")
    assert lines[at + 1 : at + 3] == [
        "        expected  deny (missing_scope)",
        "        decided   allow: operation build.Builds_Queue, requires vso.build_execute",
    ]
    assert lines[-1] == "3 tests: 1 passed, 2 failed"


def test_json_is_only_json_and_junit_parses(tmp_path: Path) -> None:
    write(tmp_path, tests=FAILING)
    done = azdo_gateway(
        "test", "-c", "gateway.yaml", "--json", "--junit", "out.xml", "tests.yaml", cwd=tmp_path
    )
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert body["ok"] is False
    assert body["summary"] == {"tests": 3, "passed": 1, "failed": 2}
    first, second, _ = body["results"]
    assert (first["name"], first["passed"], first["decision"]) == (
        "ci queues a build",
        True,
        "allow",
    )
    assert {
        k: second[k] for k in ("line", "passed", "decision", "reason", "operation", "client")
    } == {
        "line": 7,
        "passed": False,
        "decision": "deny",
        "reason": "missing_scope",
        "operation": "build.Builds_Queue",
        "client": "reader",
    }
    assert second["requiredScopes"] == ["vso.build_execute"]
    suite = ET.parse(tmp_path / "out.xml").getroot().find("testsuite")  # noqa: S314
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    cases = suite.findall("testcase")
    assert [c.get("line") for c in cases] == ["2", "7", "11"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "decision: expected allow, got deny"
    assert cases[0].find("failure") is None


def test_a_broken_test_file_gets_line_numbered_problems(tmp_path: Path) -> None:
    write(
        tmp_path,
        tests=(
            "tests:\n"
            "  - name: no caller\n"
            "    request: GET /fabrikam/_apis/projects\n"
            "    expect: allow\n"
            "  - name: a typo\n"
            "    client: ci\n"
            "    request: GET /fabrikam/_apis/projects\n"
            "    expect: alow\n"
            "    expcet: allow\n"
            "  - name: a reason nobody gives\n"
            "    client: ci\n"
            "    request: GET /fabrikam/_apis/projects\n"
            "    expect: {decision: deny, reason: missing_scop}\n"
        ),
    )
    done = azdo_gateway("test", "-c", "gateway.yaml", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "tests.yaml:2: tests[0]: set exactly one of client, key, entra (got none)",
        "tests.yaml:8: tests[1].expect.decision: expected 'allow' or 'deny', got 'alow' "
        "(did you mean 'allow'?)",
        "tests.yaml:9: tests[1].expcet: unknown key 'expcet' (did you mean 'expect'?)",
        "tests.yaml:13: tests[2].expect.reason: unknown reason 'missing_scop' (did you mean "
        "'missing_scope'? a reason the gateway answers with, e.g. missing_scope, route_denied, "
        "unknown_key)",
        "4 problems found: no test was run",
    ]


def test_the_shipped_example_passes_against_the_shipped_configuration() -> None:
    done = azdo_gateway("test", "-c", "gateway.yaml", "policies/tests/example.yaml", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].endswith(" passed, 0 failed")


def test_check_strict_json_offline(tmp_path: Path) -> None:
    write(tmp_path)
    plain = azdo_gateway("check", "-c", "gateway.yaml", cwd=tmp_path)
    assert plain.returncode == 1  # the secrets are not there
    assert "environment variable TEST_BUILD_SP_SECRET is not set" in plain.stdout
    offline = azdo_gateway("check", "--offline", "-c", "gateway.yaml", cwd=tmp_path)
    assert offline.returncode == 0, offline.stdout
    assert "note: gateway.yaml:" in offline.stdout
    assert (
        "warning: policies/p.yaml:5: clients[0].api_keys[0].expires: key 'ci-2026b' of client "
        f"'ci' expires in 5 days ({_in(5)}): add its successor, then remove it"
    ) in offline.stdout
    strict = azdo_gateway("check", "--offline", "--strict", "-c", "gateway.yaml", cwd=tmp_path)
    assert strict.returncode == 1
    assert "warnings (--strict: warnings fail the check)" in strict.stderr
    machine = azdo_gateway("check", "--offline", "--json", "-c", "gateway.yaml", cwd=tmp_path)
    body = json.loads(machine.stdout)
    assert body["ok"] is True and body["errors"] == []
    assert {(w["code"], w["file"], w["line"], w["key"]) for w in body["warnings"]} == {
        ("key_expiring", "policies/p.yaml", 5, "clients[0].api_keys[0].expires"),
        ("key_expired", "policies/p.yaml", 8, "clients[0].api_keys[1].expires"),
    }
    assert {n["code"] for n in body["notes"]} == {"env_unset", "secret_file_missing"}
    assert body["summary"]["clients"] == 2
    strict_json = azdo_gateway(
        "check", "--offline", "--json", "--strict", "-c", "gateway.yaml", cwd=tmp_path
    )
    assert strict_json.returncode == 1 and json.loads(strict_json.stdout)["ok"] is False


def test_check_json_on_errors_and_a_policies_glob_matching_nothing(tmp_path: Path) -> None:
    write(tmp_path, gateway={"policies": ["nowhere/*.yaml"], "listen": {"port": "x"}})
    done = azdo_gateway("check", "--offline", "--json", "-c", "gateway.yaml", cwd=tmp_path)
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert body["ok"] is False
    assert [(e["code"], e["key"]) for e in body["errors"]] == [
        ("invalid", "listen.port"),
        ("policies_match_nothing", "policies[0]"),
    ]
    assert body["warnings"] == []  # no follow-on "not used by any client"


def test_keys_lists_every_key_and_its_expiry(tmp_path: Path) -> None:
    write(tmp_path)
    done = azdo_gateway("keys", "-c", "gateway.yaml", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"client": "ci", "id": "ci-2026a", "expires": _in(-1), "daysLeft": -1},
        {"client": "ci", "id": "ci-2026b", "expires": _in(5), "daysLeft": 5},
    ]
    soon = azdo_gateway("keys", "-c", "gateway.yaml", "--expiring-within", "3", cwd=tmp_path)
    assert soon.stdout.splitlines() == [
        "client  key id    expires     days left",
        f"ci      ci-2026a  {_in(-1)}  -1 (expired)",
    ]


def test_a_request_on_a_host_that_is_no_upstream_fails_its_test(tmp_path: Path) -> None:
    write(
        tmp_path,
        tests=(
            "tests:\n"
            "  - name: not Azure DevOps\n"
            "    client: ci\n"
            "    request: GET https://example.org/fabrikam/_apis/projects\n"
            "    expect: deny\n"
        ),
    )
    done = azdo_gateway("test", "-c", "gateway.yaml", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert "FAILED  tests.yaml:2: not Azure DevOps" in done.stdout
    assert "'example.org' is neither the gateway" in done.stdout
