from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.authn.certificate import CertificateAuthenticator, normalize_fingerprint, parse_subject
from gateway.config.model import Config, GatewayConfig, PolicyFile
from gateway.errors import ConfigError
from gateway.loading import load_checked


def test_subjects_compare_as_sets_of_attributes():
    rfc = parse_subject("CN=build-agent, O=Fabrikam")
    assert rfc == parse_subject("/O=Fabrikam/CN=build-agent")
    assert rfc == parse_subject("o=Fabrikam,cn=build-agent")
    assert rfc != parse_subject("CN=Build-Agent,O=Fabrikam")  # values are case-sensitive
    assert parse_subject(r"CN=a\,b,O=x") == frozenset({("CN", "a,b"), ("O", "x")})
    with pytest.raises(ValueError):
        parse_subject("just-a-name")


def test_fingerprints_normalise():
    assert normalize_fingerprint("AB:cd:EF") == "abcdef"


def test_a_broken_subject_rule_is_skipped_not_a_crash():
    pol = PolicyFile.model_validate(
        {"clients": [{"name": "c", "credential": "x", "certificates": [{"subject": "nonsense"}]}]}
    )
    cfg = Config(path=Path("g.yaml"), gateway=GatewayConfig(), clients=pol.clients, routes=())
    assert CertificateAuthenticator(cfg)._rules == []


def test_check_reports_bad_fingerprints_and_subjects_with_their_line(tmp_path):
    for name in ("ca.pem", "server.pem"):
        (tmp_path / name).write_text("")
    (tmp_path / "gateway.yaml").write_text(
        yaml.safe_dump(
            {"policies": ["clients.yaml"], "credentials": {"server": {"type": "pat", "pat": "x"}}}
        )
    )
    (tmp_path / "clients.yaml").write_text(
        yaml.safe_dump(
            {
                "clients": [
                    {
                        "name": "agents",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "certificates": [
                            {"sha256_fingerprint": "12:34"},
                            {"subject": "build-agent"},
                        ],
                    }
                ]
            }
        )
    )
    with pytest.raises(ConfigError) as err:
        load_checked(tmp_path / "gateway.yaml")
    text = "\n".join(map(str, err.value.errors))
    assert "certificates[0].sha256_fingerprint" in text and "64 hex digits" in text
    assert "certificates[1].subject" in text and "distinguished name" in text
