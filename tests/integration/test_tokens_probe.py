"""`azdo-gateway check --probe` and `gateway.tokens.probe()` against the fake Entra ID."""

from __future__ import annotations

import asyncio

import yaml

from gateway.cli import main
from gateway.tokens import probe
from tests.integration.tokens_support import config_for, write_cert


async def test_probe_reports_each_credential(make_entra, tmp_path):
    entra = await make_entra()
    entra.register_app("good", secret="good-secret-123")
    entra.register_app("gw", secret="gw-secret-456")
    cert_file, _ = write_cert(entra, tmp_path, "unregistered")
    entra.register_app("cert")
    config = config_for(
        entra,
        {
            "ok-sp": {"type": "client_secret", "client_id": "good",
                      "client_secret": "good-secret-123"},
            "bad-sp": {"type": "client_secret", "client_id": "good",
                       "client_secret": "wrong-secret-789"},
            "cert-sp": {"type": "client_certificate", "client_id": "cert",
                        "certificate_file": str(cert_file)},
            "caller": {"type": "on_behalf_of", "client_id": "gw",
                       "client_secret": "gw-secret-456"},
            "server": {"type": "pat", "pat": "pat-value-000"},
            "missing": {"type": "pat", "pat_file": str(tmp_path / "nope")},
        },
    )  # fmt: skip
    results = {r.credential: r for r in await asyncio.to_thread(probe, config)}
    assert list(results) == ["ok-sp", "bad-sp", "cert-sp", "caller", "server", "missing"]
    assert results["ok-sp"].ok and "expires in" in results["ok-sp"].detail
    assert not results["bad-sp"].ok and results["bad-sp"].reason == "invalid_client"
    assert results["bad-sp"].detail.startswith("AADSTS7000215: Invalid client secret provided.")
    assert results["cert-sp"].reason == "invalid_client" and "AADSTS700027" in (
        results["cert-sp"].detail
    )
    assert results["caller"].ok and "needs a signed-in user" in results["caller"].detail
    assert results["server"].ok
    assert results["missing"].reason == "credential_file_unreadable"
    text = "\n".join(r.line() for r in results.values())
    for secret in ("good-secret-123", "wrong-secret-789", "gw-secret-456", "pat-value-000"):
        assert secret not in text


async def test_check_probe_command_prints_outcomes_and_fails(
    make_entra, tmp_path, capsys, monkeypatch
):
    entra = await make_entra()
    entra.register_app("good", secret="good-secret-123")
    (tmp_path / "ca.pem").write_bytes(entra.ca.cert_pem)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "ci.yaml").write_text(
        yaml.safe_dump(
            {"clients": [{"name": "ci", "credential": "build-sp", "scopes": ["vso.code"],
                          "api_keys": [{"id": "k1", "sha256": "a" * 64}]}]}
        )
    )  # fmt: skip
    doc = {
        "identity": {"authority_host": entra.url, "tenant_id": entra.tenant_id,
                     "ca_file": "ca.pem"},
        "credentials": {"build-sp": {"type": "client_secret", "client_id": "good",
                                     "client_secret": "${GOOD_SECRET}"}},
        "policies": ["policies/*.yaml"],
    }  # fmt: skip
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(doc))
    path = str(tmp_path / "gateway.yaml")
    monkeypatch.setenv("GOOD_SECRET", "good-secret-123")
    assert await asyncio.to_thread(main, ["check", "-c", path, "--probe"]) == 0
    out = capsys.readouterr().out
    assert "credential build-sp [client_secret]: ok: token for Azure DevOps acquired" in out
    monkeypatch.setenv("GOOD_SECRET", "not-the-secret")
    assert await asyncio.to_thread(main, ["check", "-c", path, "--probe"]) == 1
    out = capsys.readouterr().out
    assert "credential build-sp [client_secret]: FAILED (invalid_client): AADSTS7000215" in out
    assert "not-the-secret" not in out
