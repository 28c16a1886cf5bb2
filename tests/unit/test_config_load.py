"""Loading gateway.yaml and policy files: line numbers, ${ENV}, locate()."""

from __future__ import annotations

import datetime as dt
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
    assert [str(p) for p in err.value.errors] == [
        "gateway.yaml:4: credentials.server.pat: environment variable ADO_PAT is not set "
        "(set it, or give a default: ${ADO_PAT:-default})"
    ]


def test_relative_files_are_relative_to_gateway_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    write(conf, "secrets/pat", "s3cr3t\n")
    write(conf, "gateway.yaml", "credentials:\n  server: {type: pat, pat_file: secrets/pat}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load(conf / "gateway.yaml", env={})
    cred = config.gateway.credentials["server"]
    assert cred.type == "pat"
    assert cred.pat_file == str(conf / "secrets" / "pat")
    assert cred.secret() == "s3cr3t"  # one trailing newline dropped
    (conf / "secrets" / "pat").write_text("rotated\n")
    assert cred.secret() == "rotated"  # re-read on every call
    # outside the working directory, files are named by their absolute path
    assert config.locate(("credentials",)) == f"{conf / 'gateway.yaml'}:1: credentials"


def test_policy_files_in_order_each_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("b", "a", "c"):
        write(tmp_path, f"p/{name}.yaml", f"clients: [{{name: {name}, credential: s}}]\n")
    write(
        tmp_path,
        "gateway.yaml",
        """\
        credentials: {s: {type: managed_identity}}
        policies: [p/c.yaml, "p/*.yaml", p/c.yaml]
        """,
    )
    config = load(tmp_path / "gateway.yaml", env={})
    assert [c.name for c in config.clients] == ["c", "a", "b"]
    assert [p.name for p in config.files] == ["gateway.yaml", "c.yaml", "a.yaml", "b.yaml"]


def test_warnings_do_not_stop_a_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "p.yaml",
        f"""\
        clients:
          - name: old
            api_keys: [{{id: k1, sha256: "{DIGEST}", expires: 2001-02-03}}]
            credential: inline
            scopes: [vso.code]
          - name: nobody
            credential: inline
        """,
    )
    write(
        tmp_path,
        "gateway.yaml",
        """\
        credentials:
          inline: {type: client_secret, client_id: x, client_secret: hunter2, tenant_id: t}
          spare: {type: managed_identity}
        policies: [p.yaml]
        """,
    )
    config = load(tmp_path / "gateway.yaml", env={})
    assert [str(w) for w in config.warnings] == [
        "gateway.yaml:2: credentials.inline.client_secret: secret written inline: "
        "use ${ENV} or client_secret_file",
        "gateway.yaml:3: credentials.spare: not used by any client",
        "p.yaml:3: clients[0].api_keys[0].expires: key 'k1' expired on 2001-02-03",
        "p.yaml:6: clients[1]: has no api_keys, entra or certificates: it can never authenticate",
        "p.yaml:6: clients[1]: grants no scopes: only route rules can allow its requests",
    ]
    assert "hunter2" not in "\n".join(map(str, config.warnings))


@pytest.mark.parametrize(
    ("days", "setting", "expected"),
    [
        (3, "", "expires in 3 days"),
        (0, "", "expires today"),
        (1, "keys: {expiry_warning_days: 1}\n", "expires in 1 day"),
        (14, "", "expires in 14 days"),
        (15, "", None),
        (3, "keys: {expiry_warning_days: 2}\n", None),
    ],
)
def test_keys_expiring_soon_are_warned_about_with_client_and_key_id(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    days: int,
    setting: str,
    expected: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    expires = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()
    write(
        tmp_path,
        "p.yaml",
        f"""\
        clients:
          - name: jenkins
            api_keys: [{{id: k2026a, sha256: "{DIGEST}", expires: {expires}}}]
            credential: mi
            scopes: [vso.code]
        """,
    )
    (tmp_path / "gateway.yaml").write_text(
        "credentials: {mi: {type: managed_identity}}\npolicies: [p.yaml]\n" + setting
    )
    warnings = load(tmp_path / "gateway.yaml", env={}).warnings
    if expected is None:
        assert warnings == ()
        return
    assert [(w.code, str(w)) for w in warnings] == [
        (
            "key_expiring",
            f"p.yaml:3: clients[0].api_keys[0].expires: key 'k2026a' of client 'jenkins' "
            f"{expected} ({expires}): add its successor, then remove it",
        )
    ]


def test_offline_unset_variables_and_missing_secret_files_are_notes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "gateway.yaml",
        """\
        credentials:
          sp: {type: client_secret, client_id: x, client_secret: "${SP_SECRET}", tenant_id: t}
          pat: {type: pat, pat_file: /nonexistent/pat}
        listen: {port: 80, tls: {cert_file: /nonexistent/tls.crt, key_file: /nonexistent/tls.key}}
        identity: {tenant_id: t, audiences: [api://gw]}
        admin: {port: "${ADMIN_PORT}"}
        policies: [p.yaml]
        """,
    )
    write(
        tmp_path,
        "p.yaml",
        f"""\
        clients:
          - name: a
            credential: sp
            scopes: [vso.code]
            api_keys: [{{id: k, sha256: "{DIGEST}"}}]
          - {{name: b, credential: pat, scopes: [vso.code], entra: {{app_ids: [x]}}}}
        """,
    )
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "gateway.yaml", env={})
    assert {p.code for p in err.value.errors} == {"env_unset", "invalid"}
    config = load(tmp_path / "gateway.yaml", env={}, offline=True)
    assert [(n.code, n.key) for n in config.notes] == [
        ("env_unset", "credentials.sp.client_secret"),
        ("secret_file_missing", "credentials.pat.pat_file"),
        ("secret_file_missing", "listen.tls.cert_file"),
        ("secret_file_missing", "listen.tls.key_file"),
        ("env_unset", "admin.port"),
    ]
    assert [c.name for c in config.clients] == ["a", "b"]


def test_tls_certificate_and_key_must_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.demo.pki import DemoCA

    monkeypatch.chdir(tmp_path)
    ca = DemoCA()
    one, other = ca.issue_server(), ca.issue_server()
    (tmp_path / "cert.pem").write_bytes(one.cert_pem)
    (tmp_path / "key.pem").write_bytes(other.key_pem)
    (tmp_path / "good-key.pem").write_bytes(one.key_pem)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    tls = "listen: {tls: {cert_file: cert.pem, key_file: %s, client_ca_file: ca.pem}}\n"
    write(tmp_path, "gateway.yaml", tls % "key.pem")
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "gateway.yaml", env={})
    assert len(err.value.errors) == 1
    assert str(err.value.errors[0]).startswith(
        "gateway.yaml:1: listen.tls: certificate and key do not load together ("
    )
    write(tmp_path, "gateway.yaml", tls % "good-key.pem")
    assert load(tmp_path / "gateway.yaml", env={}).gateway.listen.tls is not None


def test_locate_routes_and_unwritten_keys(cfg: Path) -> None:
    write(
        cfg.parent,
        "policies/web.yaml",
        """\
        routes:
          - name: r
            match: {method: delete, path: /x}
            deny: true
        """,
    )
    config = load(cfg, env={"ADO_PAT": "x"})
    assert config.routes[0].match.method == ("DELETE",)
    assert (
        config.locate(("routes", 0, "match", "path")) == "policies/web.yaml:3: routes[0].match.path"
    )
    assert config.locate(("routes", 0, "scopes")) == "policies/web.yaml:2: routes[0].scopes"
    assert config.locate(("clients", 9)) == "gateway.yaml: clients[9]"


def test_every_problem_in_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path,
        "p.yaml",
        "clients:\n" + "".join(f"  - {{name: c{i}, credential: nope{i}}}\n" for i in range(5)),
    )
    write(tmp_path, "gateway.yaml", "policies: [p.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "gateway.yaml", env={})
    assert [str(p) for p in err.value.errors] == [
        f"p.yaml:{i + 2}: clients[{i}].credential: unknown credential 'nope{i}' (none are defined)"
        for i in range(5)
    ]
