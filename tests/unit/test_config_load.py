"""Loading gateway.yaml and policy files: line numbers, ${ENV}, locate()."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config.load import load
from gateway.errors import ConfigError

DIGEST = "ab" * 32


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "policies/ci.yaml",
        f"""\
        clients:
          - name: ci
            credential: server
            scopes: [vso.code]
            api_keys: [{{id: k1, sha256: "{DIGEST}"}}]
        """,
    )
    write(
        tmp_path,
        "policies/web.yaml",
        """\
        # second file
        clients:
          - name: web
            credential: server
            scopes:
              - vso.build
              - vso.code
            api_keys: []
        """,
    )
    return write(
        tmp_path,
        "gateway.yaml",
        """\
        upstream:
          hosts: {main: "${ADO_URL:-https://dev.azure.com}"}
        credentials:
          server: {type: pat, pat: "${ADO_PAT}"}
        policies: [policies/*.yaml]
        """,
    )


def test_loads_env_and_policies(cfg: Path) -> None:
    config = load(cfg, env={"ADO_PAT": "p: a\nb"})
    pat = config.gateway.credentials["server"]
    assert pat.type == "pat" and pat.secret() == "p: a\nb"
    assert config.gateway.upstream.hosts["main"] == "https://dev.azure.com"
    assert [c.name for c in config.clients] == ["ci", "web"]


def test_locate_gives_file_line_and_key(cfg: Path) -> None:
    config = load(cfg, env={"ADO_PAT": "x"})
    assert config.locate(("clients", 1, "scopes", 1)) == "policies/web.yaml:7: clients[0].scopes[1]"
    assert (
        config.locate(("clients", 0, "credential")) == "policies/ci.yaml:3: clients[0].credential"
    )
    assert (
        config.locate(("credentials", "server", "pat")) == "gateway.yaml:4: credentials.server.pat"
    )
    assert config.locate(("listen", "port")) == "gateway.yaml: listen.port"


def test_missing_variable_is_named(cfg: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(cfg, env={})
    assert err.value.problems == [
        "gateway.yaml:4: credentials.server.pat: environment variable ADO_PAT is not set "
        "(set it, or give a default: ${ADO_PAT:-default})"
    ]
