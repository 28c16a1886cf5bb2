from __future__ import annotations

import json

import pytest
import yaml

from gateway.cli import main
from gateway.commands.report import Inclusion, smallest_grant
from tests.harness import new_key

INC = Inclusion()


@pytest.mark.parametrize(
    "needs, expected",
    [
        ([], []),
        ([{"vso.code"}], ["vso.code"]),
        ([{"vso.code"}, {"vso.code_write"}], ["vso.code_write"]),  # write includes read
        ([{"vso.code"}, {"vso.build"}], ["vso.build", "vso.code"]),
        # any-of: the narrower option wins, and one that another need forces is reused
        ([{"vso.code", "vso.code_write"}], ["vso.code"]),
        ([{"vso.build_execute"}, {"vso.build", "vso.code"}], ["vso.build_execute"]),
        ([{"vso.code_manage", "vso.code_write"}, {"vso.code"}], ["vso.code_write"]),
    ],
)
def test_smallest_grant(needs, expected):
    assert smallest_grant([frozenset(n) for n in needs], INC) == expected


def line(
    client,
    decision,
    scopes=(),
    reason=None,
    op="git.Repositories_List",
    report=False,
    time="2026-11-20T10:00:00.000Z",
    **extra,
):
    return json.dumps(
        {
            "time": time,
            "requestId": "r",
            "client": client,
            "operation": op,
            "requiredScopes": list(scopes),
            "decision": decision,
            "reason": reason,
            "reportOnly": report,
            **extra,
        }
    )


@pytest.fixture
def setup(tmp_path):
    _, digest = new_key()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(
        yaml.safe_dump(
            {
                "clients": [
                    {
                        "name": "ci",
                        "credential": "sp",
                        "scopes": ["vso.code_write", "vso.build_execute"],
                        "api_keys": [{"id": "k", "sha256": digest}],
                    },
                    {
                        "name": "idle",
                        "credential": "sp",
                        "scopes": ["vso.work"],
                        "api_keys": [{"id": "k", "sha256": digest[::-1]}],
                    },
                    {
                        "name": "trial",
                        "credential": "sp",
                        "scopes": [],
                        "mode": "report",
                        "api_keys": [{"id": "k", "sha256": "a" * 64}],
                    },
                ]
            }
        )
    )
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"policies": ["policies/*.yaml"], "credentials": {"sp": {"type": "pat", "pat": "x"}}}
        )
    )
    audit = tmp_path / "audit.jsonl"
    audit.write_text(
        "\n".join(
            [
                line("ci", "allow", ["vso.code"]),
                line("ci", "allow", ["vso.code"]),
                line("ci", "allow", ["vso.build"], op="build.Builds_List"),
                line("ci", "deny", ["vso.release"], "missing_scope", op="release.Releases_List"),
                line("ci", "deny", [], "rate_limited", op=None),
                line(
                    "trial",
                    "allow",
                    ["vso.work"],
                    "missing_scope",
                    op="wit.WorkItems_List",
                    report=True,
                ),
                line(
                    "trial",
                    "allow",
                    ["vso.work_write"],
                    "missing_scope",
                    op="wit.WorkItems_Update",
                    report=True,
                    time="2026-11-24T10:00:00.000Z",
                ),
                line(None, "deny", [], "unknown_key", op=None),
                "not json",
                "",
            ]
        )
        + "\n"
    )
    return cfg, audit


def test_yaml_report_is_pasteable_and_least_privilege(setup, capsys):
    cfg, audit = setup
    assert main(["report", "--audit", str(audit), "-c", str(cfg)]) == 0
    captured = capsys.readouterr()
    doc = yaml.safe_load(captured.out)
    scopes = {c["name"]: c["scopes"] for c in doc["clients"]}
    assert scopes == {"ci": ["vso.build", "vso.code"], "idle": [], "trial": ["vso.work_write"]}
    out = captured.out
    assert "# granted: [vso.code_write, vso.build_execute]" in out
    assert "# unused grants: [vso.build_execute, vso.code_write]" not in out
    assert "# denied: missing_scope 1, rate_limited 1" in out
    assert "missing scope for release.Releases_List (1x)" in out
    assert "no traffic in this period" in out
    assert "(2 only by report mode)" in out
    assert (
        "allowed traffic needed scopes the grant lacks (report mode): "
        "[vso.work, vso.work_write]" in out
    )
    assert "# unauthenticated requests: 1 (unknown_key 1)" in out
    assert "skipped 1 lines" in captured.err


def test_json_and_since(setup, capsys):
    cfg, audit = setup
    assert (
        main(["report", "--audit", str(audit), "-c", str(cfg), "--json", "--since", "2026-11-21"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    by = {c["client"]: c for c in data["clients"]}
    assert by["ci"]["requests"] == 0 and by["ci"]["recommended"] == []
    assert by["trial"]["requests"] == 1 and by["trial"]["recommended"] == ["vso.work_write"]
    assert by["ci"]["unused"] == ["vso.build_execute", "vso.code_write"]
    assert data["since"].startswith("2026-11-21T00:00:00")


def test_unused_and_beyond_need(setup, capsys):
    cfg, audit = setup
    assert main(["report", "--audit", str(audit), "-c", str(cfg), "--json"]) == 0
    by = {c["client"]: c for c in json.loads(capsys.readouterr().out)["clients"]}
    assert by["ci"]["unused"] == []
    assert "vso.code_write" in by["ci"]["beyondNeed"]
    assert "vso.build_execute" in by["ci"]["beyondNeed"]
    assert by["ci"]["denied"] == {"missing_scope": 1, "rate_limited": 1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--since", "yesterday"], "expected an ISO date/time"),
        (["--audit", "/nonexistent/audit.jsonl"], "cannot read /nonexistent/audit.jsonl"),
    ],
)
def test_bad_input_is_a_clear_error(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["report"] + (argv if "--audit" in argv else ["--audit", "x", *argv])
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/fabrikam/Fiber/_apis/x/12", "/{organization}/{project}/_apis/x/{id}"),
        ("/fabrikam/_apis/x/6CE954B1-CE1F-45D1-B94D-E6BF2464BA2C", "/{organization}/_apis/x/{id}"),
        (
            "/fabrikam/Fiber/_git/app/commit/0123abcd",
            "/{organization}/{project}/_git/{repository}/commit/{id}",
        ),
        (
            "/fabrikam/_packaging/feed1/pypi/simple/x",
            "/{organization}/_packaging/{feed}/pypi/simple/x",
        ),
        ("/_apis/profile/profiles/me", "/_apis/profile/profiles/me"),
        ("/fabrikam/Fiber/_apis/wit/workitems", "/{organization}/{project}/_apis/wit/workitems"),
        ("/fabrikam", "/{organization}"),
        ("/fabrikam/_apis/cafe/beef", "/{organization}/_apis/cafe/beef"),  # no digit: a word
    ],
)
def test_paths_are_grouped_by_their_shape(path, expected):
    from gateway.commands.report_denials import shape

    assert shape(path) == expected


def test_lookup_lines_are_not_client_traffic(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no gateway.yaml here
    audit = tmp_path / "audit.jsonl"
    audit.write_text(
        line("ci", "allow", ["vso.code"])
        + "\n"
        + json.dumps({"kind": "project_lookup", "time": "2026-11-23T10:00:00.000Z", "client": "ci"})
        + "\n"
    )
    assert main(["report", "--audit", str(audit), "--json"]) == 0
    (ci,) = json.loads(capsys.readouterr().out)["clients"]
    assert (ci["requests"], ci["wouldBeDenied"]) == (1, [])
