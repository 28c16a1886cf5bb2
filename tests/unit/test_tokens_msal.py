"""Turning MSAL answers and failures into tokens and bounded, secret-free errors."""

from __future__ import annotations

import time

import msal
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.demo.pki import DemoCA
from gateway.tokens.base import TokenAcquisitionError, redact
from gateway.tokens.msal_common import IdentitySession, TrustStore, call_msal, issued_from
from gateway.tokens.msal_confidential import CertificateAssertion
from gateway.tokens.on_behalf_of import delegated_scopes

ENTRA_ERROR = {
    "error": "invalid_client",
    "error_description": "AADSTS7000215: Invalid client secret provided. Trace ID: 1 "
    "Correlation ID: 2 Timestamp: 2026-01-01 00:00:00Z",
    "error_codes": [7000215],
}


def test_success_with_refresh_on_from_msal():
    now = time.time()
    token = issued_from(
        {"access_token": "secret-at", "expires_in": 3599, "refresh_on": int(now) + 1800}, now
    )
    assert token.expires_at == now + 3599 and token.acquired_at == now
    assert token.refresh_in == pytest.approx(1800, abs=1)
    assert "secret-at" not in repr(token)


def test_entra_error_keeps_the_aadsts_text_without_trace_ids():
    with pytest.raises(TokenAcquisitionError) as info:
        issued_from(ENTRA_ERROR, time.time())
    err = info.value
    assert (err.reason, err.code) == ("invalid_client", 7000215)
    assert err.message == "AADSTS7000215: Invalid client secret provided."


def test_error_text_never_carries_a_secret():
    answer = dict(ENTRA_ERROR, error_description="AADSTS1: bad secret hunter2-secret")
    with pytest.raises(TokenAcquisitionError) as info:
        issued_from(answer, time.time(), ["hunter2-secret"])
    assert "hunter2" not in info.value.message
    assert redact("x hunter2-secret y", ["hunter2-secret", None, ""]) == "x *** y"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (requests.exceptions.ConnectTimeout("slow"), "timeout"),
        (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), "tls_error"),
        (requests.exceptions.ConnectionError("refused"), "unreachable"),
        (
            msal.exceptions.MsalServiceError("HTTP Error: 503", error=None, error_description=None),
            "server_error",
        ),
        (ValueError("OIDC Discovery failed on https://x"), "discovery_failed"),
        (ValueError("something odd"), "bad_response"),
        (msal.managed_identity.ManagedIdentityError("no endpoint"), "managed_identity_unavailable"),
    ],
)
def test_transport_failures_map_to_bounded_reasons(exc, reason):
    def boom() -> dict:
        raise exc

    with pytest.raises(TokenAcquisitionError) as info:
        call_msal(boom)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("reason", "label"), [("invalid_client", "invalid_client"), ("Weird Code!", "error")]
)
def test_reason_labels_are_bounded(reason, label):
    assert TokenAcquisitionError(reason, "m").reason == label


def test_session_ignores_the_environment_for_trust(monkeypatch, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    ca = DemoCA()
    trust = TrustStore(str(ca.write_cert(tmp_path / "ca.pem")))
    session = IdentitySession(trust.verify, {})
    settings = session.merge_environment_settings("https://login.example", {}, None, None, None)
    assert settings["verify"] == trust.verify and session.trust_env is False
    with open(str(trust.verify), "rb") as fh:
        bundle = fh.read()
    assert ca.cert_pem in bundle and bundle.count(b"BEGIN CERTIFICATE") > 10  # plus defaults
    trust.close()
    session.close()


def test_delegated_scopes_are_the_granted_ones_on_azure_devops():
    ado = "499b84ac-1321-427f-aa17-267ca6975798"
    assert delegated_scopes(["vso.code", "vso.build"]) == (f"{ado}/vso.build", f"{ado}/vso.code")
    assert delegated_scopes([]) == (f"{ado}/.default",)


def test_certificate_file_problems_are_clear():
    ca = DemoCA()
    good = ca.issue_client("a")
    other = ca.issue_client("b")
    with pytest.raises(TokenAcquisitionError, match="PEM certificate and its private key"):
        CertificateAssertion(b"not a pem", None, "app", False)
    with pytest.raises(TokenAcquisitionError, match="matches its private key"):
        CertificateAssertion(good.key_pem + other.cert_pem, None, "app", False)
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(TokenAcquisitionError, match="need an RSA key"):
        CertificateAssertion(ec_key + good.cert_pem, None, "app", False)
    with pytest.raises(TokenAcquisitionError) as info:
        CertificateAssertion(good.key_pem + good.cert_pem, "wrong-password", "app", False)
    assert info.value.reason == "bad_certificate" and "wrong-password" not in info.value.message
