from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

POLICY = """\
clients:
  - name: ci
    credential: server
    api_keys: [{id: k1, sha256: "ZEROS"}]
    scopes: [vso.code]
    projects: [fabrikam/Fiber]
  - name: watcher
    credential: server
    api_keys: [{id: k2, sha256: "ONES"}]
    scopes: [vso.build]
    mode: report
routes:
  - name: no-repo-deletes
    match: {method: DELETE, path: "/{organization}/{project}/_apis/git/repositories/{id}"}
    deny: true
""".replace("ZEROS", "0" * 64).replace("ONES", "1" * 64)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "gateway.yaml").write_text(
        "credentials:\n  server: {type: pat, pat_file: pat.txt}\npolicies: [clients.yaml]\n"
        "listen: {public_url: 'https://ado-gw.example.com'}\n"
    )
    (tmp_path / "pat.txt").write_text("not-a-real-pat")
    (tmp_path / "clients.yaml").write_text(POLICY)
    return tmp_path / "gateway.yaml"


def explain(config_file: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["explain", "-c", str(config_file), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_allowed(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(
        config_file,
        capsys,
        "--client",
        "ci",
        "GET",
        "https://dev.azure.com/fabrikam/Fiber/_apis/git/repositories",
    )
    assert code == 0
    assert out == (
        "request     GET /fabrikam/Fiber/_apis/git/repositories\n"
        "canonical   GET /fabrikam/Fiber/_apis/git/repositories on host main\n"
        "operation   git.Repositories_List (area git)\n"
        "template    GET /{organization}/{project}/_apis/git/repositories\n"
        "binds       organization=fabrikam, project=Fiber\n"
        "requires    vso.code (or a scope that includes it: user_impersonation, vso.code_full, "
        "vso.code_manage, vso.code_write)\n"
        "client      ci: scopes vso.code; projects fabrikam/Fiber; mode enforce\n"
        "decision    ALLOWED\n"
    )


def test_denied_by_route_rule(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(
        config_file,
        capsys,
        "--client",
        "ci",
        "DELETE",
        "https://ado-gw.example.com/fabrikam/Fiber/_apis/git/repositories/r",
    )
    assert code == 1
    assert "routes      no-repo-deletes\n" in out
    assert out.endswith(
        "decision    DENIED (route_denied)\nwhy         denied by route rule 'no-repo-deletes'\n"
    )


def test_other_hosts_and_rejections(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(
        config_file,
        capsys,
        "--client",
        "ci",
        "GET",
        "https://vsrm.dev.azure.com/fabrikam/Fiber/_apis/release/releases",
    )
    assert code == 1
    assert "canonical   GET /fabrikam/Fiber/_apis/release/releases on host vsrm\n" in out
    assert "decision    DENIED (missing_scope)\n" in out
    code, out = explain(config_file, capsys, "--client", "ci", "GET", "/fabrikam/%2e%2e/x")
    assert code == 1
    assert out.endswith("decision    REJECTED (ambiguous_path)\nwhy         dot segment in path\n")


def test_report_mode(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(
        config_file, capsys, "--client", "watcher", "POST", "/fabrikam/Fiber/_apis/git/repositories"
    )
    assert code == 0
    assert "decision    ALLOWED (report mode; would be denied: missing_scope)\n" in out


def test_json_and_method_override(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(
        config_file,
        capsys,
        "--client",
        "ci",
        "--json",
        "-H",
        "X-HTTP-Method-Override: PATCH",
        "POST",
        "/fabrikam/Fiber/_apis/wit/workitems/1",
    )
    doc = json.loads(out)
    assert code == 1
    assert doc["request"]["effectiveMethod"] == "PATCH"
    assert doc["operation"]["id"] == "wit.WorkItems_Update"
    assert doc["requiredScopes"] == ["vso.work_write"]
    assert doc["decision"] == {
        "allowed": False,
        "status": 403,
        "reason": "missing_scope",
        "message": "wit.WorkItems_Update needs vso.work_write; client 'ci' is granted vso.code",
        "reportOnly": False,
        "rule": None,
    }


def test_usage_errors(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = explain(config_file, capsys, "--client", "cj", "GET", "/x")
    assert (code, out) == (2, "unknown client 'cj' (did you mean 'ci'?); clients: ci, watcher\n")
    code, out = explain(config_file, capsys, "--client", "ci", "-H", "nocolon", "GET", "/x")
    assert (code, out) == (2, "bad header 'nocolon': expected 'Name: value'\n")


def test_a_form_names_the_operation_and_its_full_template(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the README's example: the organization-wide form of git.Repositories_List
    code, out = explain(
        config_file,
        capsys,
        "--client",
        "ci",
        "GET",
        "https://dev.azure.com/fabrikam/_apis/git/repositories",
    )
    assert code == 1
    assert "operation   git.Repositories_List (area git)\n" in out
    assert "template    GET /{organization}/_apis/git/repositories\n" in out
    assert (
        "form        of /{organization}/{project}/_apis/git/repositories, without project "
        "(optional in the specification)\n"
    ) in out
    assert "decision    DENIED (project_not_allowed)\n" in out
    code, out = explain(
        config_file, capsys, "--json", "--client", "ci", "POST", "/fabrikam/Fiber/_apis/wit/wiql"
    )
    op = json.loads(out)["operation"]
    assert (op["id"], op["omits"], op["fullTemplate"]) == (
        "wit.Wiql_QueryByWiql",
        ["team"],
        "/{organization}/{project}/{team}/_apis/wit/wiql",
    )
    assert (op["organization"], op["project"]) == ("fabrikam", "Fiber")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://example.com/fabrikam/_apis/projects", "'example.com'"),
        ("https://dev.azure.com.evil.example/fabrikam/_apis/projects", "'dev.azure.com.evil"),
        ("https://dev.azure.com:8443/fabrikam/_apis/projects", "'dev.azure.com:8443'"),
        ("ftp://dev.azure.com/fabrikam/_apis/projects", "'dev.azure.com'"),
        ("fabrikam/_apis/projects", "did you mean the path '/fabrikam/_apis/projects'?"),
    ],
)
def test_a_url_on_no_configured_host_is_refused(
    config_file: Path, capsys: pytest.CaptureFixture[str], url: str, shown: str
) -> None:
    code, out = explain(config_file, capsys, "--client", "ci", "GET", url)
    assert code == 2
    assert out.startswith(f"explain: {url}: ") and shown in out
    assert "is neither the gateway (https://ado-gw.example.com, http://127.0.0.1:8080" in out
    assert "upstream.hosts (main, vssps, vsrm" in out
    assert "request " not in out  # nothing explained


@pytest.mark.parametrize(
    "url",
    [
        "https://ado-gw.example.com/fabrikam/Fiber/_apis/git/repositories",
        "HTTPS://Dev.Azure.Com:443/fabrikam/Fiber/_apis/git/repositories",
        "http://localhost:8080/fabrikam/Fiber/_apis/git/repositories",  # the listener
        "dev.azure.com/fabrikam/Fiber/_apis/git/repositories",
    ],
)
def test_urls_of_the_gateway_and_its_upstream_hosts_are_explained(
    config_file: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out = explain(config_file, capsys, "--client", "ci", "GET", url)
    assert code == 0, out
    assert "canonical   GET /fabrikam/Fiber/_apis/git/repositories on host main\n" in out
