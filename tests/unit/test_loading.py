"""load_checked: the loader plus the policy checks, as run, reload and check use it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import gateway.policy
from gateway.cli import main
from gateway.config.load import load
from gateway.config.model import Config
from gateway.config.problems import Problem
from gateway.errors import ConfigError
from gateway.loading import load_checked

REPO = Path(__file__).resolve().parents[2]


def _example_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("BUILD_SP_", "GATEWAY_APP_", "PLATFORM_MI_", "AZDO_GATEWAY_")):
            monkeypatch.delenv(name)


def test_repository_example_passes_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _example_env(monkeypatch)
    monkeypatch.chdir(REPO)
    assert main(["check", "-c", "gateway.yaml"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gateway.yaml: ok: 4 clients, 3 credentials, 2 routes, 3 policy files, ")
    config = load("gateway.yaml")
    lines = (REPO / "gateway.yaml").read_text().splitlines()

    def line_of(variable: str) -> int:  # where the example reads that secret
        return next(i for i, text in enumerate(lines, 1) if f"${{{variable}" in text)

    assert [str(w) for w in config.warnings] == [
        f"gateway.yaml:{line_of('BUILD_SP_CLIENT_SECRET')}: credentials.build-sp.client_secret:"
        " is empty: upstream tokens cannot be acquired with it (is BUILD_SP_CLIENT_SECRET set?)",
        f"gateway.yaml:{line_of('GATEWAY_APP_CLIENT_SECRET')}: credentials.caller.client_secret:"
        " is empty: upstream tokens cannot be acquired with it (is GATEWAY_APP_CLIENT_SECRET set?)",
    ]
    for warning in config.warnings:
        assert f"warning: {warning}\n" in out


def test_repository_example_with_secrets_set_has_no_config_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _example_env(monkeypatch)
    monkeypatch.setenv("BUILD_SP_CLIENT_SECRET", "from-env-1")
    monkeypatch.setenv("GATEWAY_APP_CLIENT_SECRET", "from-env-2")
    monkeypatch.chdir(REPO)
    config = load("gateway.yaml")
    assert config.warnings == ()
    assert config.gateway.credentials["build-sp"].secret() == "from-env-1"  # type: ignore[union-attr]


def _write(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(
        "clients:\n  - {name: ci, credential: mi, scopes: [vso.code]}\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text("credentials: {mi: {type: managed_identity}}\npolicies: [p.yaml]\n")
    return path


def test_policy_check_errors_and_warnings_are_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[Config] = []

    def check_policy(config: Config, catalog: object) -> list[Problem]:
        seen.append(config)
        return [
            config.sources.problem(("clients", 0, "scopes", 0), "unknown scope"),
            config.sources.warning(("clients", 0), "policy warning", "no_scopes"),
        ]

    monkeypatch.setattr(gateway.policy, "check_policy", check_policy)
    with pytest.raises(ConfigError) as err:
        load_checked(_write(tmp_path))
    assert [str(p) for p in err.value.errors] == ["p.yaml:2: clients[0].scopes[0]: unknown scope"]
    assert [str(w) for w in err.value.warnings] == [
        "p.yaml:2: clients[0]: has no api_keys, entra or certificates: it can never authenticate",
        "p.yaml:2: clients[0]: policy warning",
    ]
    assert len(seen) == 1

    def warn(config: Config, catalog: object) -> list[Problem]:
        return [config.sources.warning(("clients", 0), "w2", "no_scopes")]

    monkeypatch.setattr(gateway.policy, "check_policy", warn)
    config = load_checked(_write(tmp_path))
    assert [w.message for w in config.warnings] == [
        "has no api_keys, entra or certificates: it can never authenticate",
        "w2",
    ]


def test_policy_check_is_not_run_on_a_file_that_is_not_a_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    called = []
    monkeypatch.setattr(gateway.policy, "check_policy", lambda c, k: called.append(c) or [])
    (tmp_path / "gateway.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError) as err:
        load_checked(tmp_path / "gateway.yaml")
    assert [str(p) for p in err.value.errors] == [
        "gateway.yaml:1: expected a mapping of: listen, admin, upstream, identity, credentials, "
        "policies, audit, limits, keys, logging, state; got a list"
    ]
    assert called == []


def test_catalog_checks_still_run_when_loading_finds_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "clients:\n"
        "  - {name: ok, credential: mi, scopes: [vso.cod]}\n"
        "  - {name: broken, credential: mi, mode: enforcing}\n"
        "routes:\n"
        "  - {name: r, match: {path: /x, method: [GET, 'A B']}, clients: [broken]}\n"
    )
    (tmp_path / "gateway.yaml").write_text(
        "listen: {port: x}\ncredentials: {mi: {type: managed_identity}}\npolicies: [p.yaml]\n"
    )
    seen: list[Config] = []

    def check_policy(config: Config, catalog: object) -> list[Problem]:
        seen.append(config)
        at = config.sources.problem
        return [
            at(("clients", 0, "scopes", 0), "unknown scope 'vso.cod'"),
            at(("routes", 0, "match", "method"), "unknown method 'A B'"),
            at(("routes", 0, "clients", 0), "unknown client 'broken'"),
            config.sources.warning(("routes", 0), "rule 'r' matches no operation", "x"),
        ]

    monkeypatch.setattr(gateway.policy, "check_policy", check_policy)
    with pytest.raises(ConfigError) as err:
        load_checked(tmp_path / "gateway.yaml")
    assert [c.name for c in seen[0].clients] == ["ok"]  # the valid part only
    assert [str(p) for p in err.value.errors] == [
        "gateway.yaml:1: listen.port: expected a whole number, got 'x'",
        "p.yaml:2: clients[0].scopes[0]: unknown scope 'vso.cod'",
        "p.yaml:3: clients[1].mode: expected 'enforce' or 'report', got 'enforcing' "
        "(did you mean 'enforce'?)",
        # the loader's finding at routes[0].match.method[1]; not again as the policy's,
        # and no "unknown client" for a client that is there but broken
        "p.yaml:5: routes[0].match.method[1]: expected an HTTP method such as GET or POST, "
        "got 'A B'",
    ]
    assert [str(w) for w in err.value.warnings] == [
        "p.yaml:2: clients[0]: has no api_keys, entra or certificates: it can never authenticate",
        "p.yaml:5: routes[0]: rule 'r' matches no operation",
    ]
