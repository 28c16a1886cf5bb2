"""Each credential type against the fake Entra ID: certificates (thumbprint and x5c),
workload identity file rotation, managed identity kinds, PATs, trust and discovery."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.config.model import Client, Config, GatewayConfig
from gateway.errors import CredentialUnavailable
from gateway.tokens import TokenBroker
from gateway.tokens.base import AZURE_DEVOPS_DEFAULT_SCOPE as DEFAULT_SCOPE
from gateway.tokens.msal_common import IdentitySession
from gateway.tokens.msal_confidential import ConfidentialCredential
from tests.integration.tokens_support import (
    app_identity,
    broker_for,
    config_for,
    write_cert,
)


async def _token(broker: TokenBroker, config, name: str) -> dict:
    client = next(c for c in config.clients if c.name == name)
    token = await broker.acquire(app_identity(name), client)
    return jwt.decode(
        token.header_value.removeprefix("Bearer "), options={"verify_signature": False}
    )


async def test_certificate_by_thumbprint_and_by_subject_name_issuer(make_entra, tmp_path, started):
    entra = await make_entra()
    thumb_file, thumb_pem = write_cert(entra, tmp_path, "by-thumbprint")
    sni_file, _ = write_cert(entra, tmp_path, "by-subject")
    entra.register_app("thumb-app", certificate_pem=thumb_pem)
    entra.register_app("sni-app", trusted_subject="by-subject")  # no certificate uploaded
    config = config_for(entra, {
        "thumb": {"type": "client_certificate", "client_id": "thumb-app",
                  "certificate_file": str(thumb_file)},
        "sni": {"type": "client_certificate", "client_id": "sni-app",
                "certificate_file": str(sni_file), "send_x5c": True},
        "sni-no-x5c": {"type": "client_certificate", "client_id": "sni-app",
                       "certificate_file": str(sni_file)},
    })  # fmt: skip
    broker, metrics = broker_for(config)
    await started(broker)
    assert (await _token(broker, config, "thumb"))["appid"] == "thumb-app"
    assert (await _token(broker, config, "sni"))["appid"] == "sni-app"
    with pytest.raises(CredentialUnavailable, match="invalid_client"):
        await _token(broker, config, "sni-no-x5c")
    headers = [jwt.get_unverified_header(a) for a in entra.assertions]
    by_x5c = [h for h in headers if "x5c" in h]
    assert len(by_x5c) == 1 and all(h["alg"] == "PS256" and "x5t#S256" in h for h in headers)
    leaf = x509.load_pem_x509_certificate(sni_file.read_bytes())
    assert base64.b64decode(by_x5c[0]["x5c"][0]) == leaf.public_bytes(Encoding.DER)


async def test_encrypted_certificate_key_with_password(make_entra, tmp_path, started):
    entra = await make_entra()
    issued = entra.ca.issue_client("locked")
    key = serialization.load_pem_private_key(issued.key_pem, None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pem-pass-phrase"),
    )
    (tmp_path / "locked.pem").write_bytes(locked + issued.cert_pem)
    entra.register_app("locked-app", certificate_pem=issued.cert_pem)
    config = config_for(entra, {
        "locked": {"type": "client_certificate", "client_id": "locked-app",
                   "certificate_file": str(tmp_path / "locked.pem"),
                   "certificate_password": "pem-pass-phrase"},
    })  # fmt: skip
    broker, _ = broker_for(config)
    await started(broker)
    assert (await _token(broker, config, "locked"))["appid"] == "locked-app"


async def test_workload_identity_rereads_the_rotated_token_file(make_entra, tmp_path, started):
    entra = await make_entra()
    entra.register_app("wi-app", federated_subject="system:serviceaccount:ci:gateway")
    token_file = tmp_path / "azure-identity-token"
    first = entra.mint_federated_token("system:serviceaccount:ci:gateway")
    token_file.write_text(first)
    config = config_for(entra, {
        "aks": {"type": "workload_identity", "client_id": "wi-app",
                "token_file": str(token_file)},
    })  # fmt: skip
    broker, _ = broker_for(config)
    await started(broker)
    client = config.clients[0]
    token = await broker.acquire(app_identity("aks"), client)
    assert entra.assertions == [first]

    rotated = entra.mint_federated_token("system:serviceaccount:ci:gateway")
    token_file.write_text(rotated + "\n")  # kubelet rewrites the projected file
    broker.invalidate(token)
    await broker.acquire(app_identity("aks"), client)
    assert entra.assertions == [first, rotated]

    token_file.write_text(entra.mint_federated_token("system:serviceaccount:other:sa"))
    broker._slots["aks"].token = None  # force the next request to acquire
    with pytest.raises(CredentialUnavailable, match="invalid_request"):
        await broker.acquire(app_identity("aks"), client)
    assert "AADSTS70021" in broker._slots["aks"].last_error.message


async def test_managed_identity_kinds_on_app_service(make_entra, monkeypatch, started):
    entra = await make_entra()
    system = entra.register_managed_identity(system_assigned=True)
    by_object = entra.register_managed_identity(object_id="mi-object")
    by_resource = entra.register_managed_identity(resource_id="/subscriptions/s/rg/mi")
    monkeypatch.setenv("IDENTITY_ENDPOINT", entra.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", entra.identity_header)
    config = config_for(entra, {
        "system": {"type": "managed_identity"},
        "object": {"type": "managed_identity", "object_id": "mi-object"},
        "resource": {"type": "managed_identity", "resource_id": "/subscriptions/s/rg/mi"},
    })  # fmt: skip
    broker, _ = broker_for(config)
    await started(broker)
    assert await broker.warm_up(10) == (True, "ok")
    assert (await _token(broker, config, "system"))["oid"] == system.object_id
    assert (await _token(broker, config, "object"))["oid"] == by_object.object_id
    assert (await _token(broker, config, "resource"))["oid"] == by_resource.object_id
    assert entra.requests["managed_identity"] == 3


async def test_managed_identity_with_a_wrong_identity_header_fails_cleanly(
    make_entra, monkeypatch, started
):
    entra = await make_entra()
    entra.register_managed_identity(system_assigned=True)
    monkeypatch.setenv("IDENTITY_ENDPOINT", entra.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header-secret")
    config = config_for(entra, {"system": {"type": "managed_identity"}})
    broker, metrics = broker_for(config)
    await started(broker)
    with pytest.raises(CredentialUnavailable) as info:
        await _token(broker, config, "system")
    assert "not-the-header-secret" not in info.value.message
    assert sum(n for (c, r), n in metrics.acquisitions.items() if r != "ok") == 1


async def test_pat_header_and_pat_file(tmp_path, started):
    (tmp_path / "pat").write_text("file-pat-value\n")
    config = Config(
        path=Path("gateway.yaml"),
        gateway=GatewayConfig.model_validate({"credentials": {
            "inline": {"type": "pat", "pat": "inline-pat", "user": "svc"},
            "file": {"type": "pat", "pat_file": str(tmp_path / "pat")},
            "gone": {"type": "pat", "pat_file": str(tmp_path / "missing")},
        }}),
        clients=tuple(Client(name=n, credential=n) for n in ("inline", "file", "gone")),
        routes=(),
    )  # fmt: skip
    broker = await started(TokenBroker(config))
    inline = await broker.acquire(app_identity("inline"), config.clients[0])
    assert inline.header_value == "Basic " + base64.b64encode(b"svc:inline-pat").decode()
    assert inline.expires_at is None
    from_file = await broker.acquire(app_identity("file"), config.clients[1])
    assert from_file.header_value == "Basic " + base64.b64encode(b":file-pat-value").decode()
    with pytest.raises(CredentialUnavailable, match="credential_file_unreadable"):
        await broker.acquire(app_identity("gone"), config.clients[2])
    assert broker.ready() == (False, "no upstream token yet for: gone (credential_file_unreadable)")


async def test_identity_ca_file_wins_over_requests_ca_bundle_and_nothing_else_is_asked(
    make_entra, tmp_path, monkeypatch, started
):
    entra = await make_entra()
    entra.register_app("sp", secret="s")
    other = await make_entra()  # a CA that does not sign the stand-in's certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other.ca_file))
    # any host other than the authority would go to a proxy that is not there
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("MSAL_FORCE_REGION", "westus2")
    config = config_for(entra, {"sp": {"type": "client_secret", "client_id": "sp",
                                       "client_secret": "s"}})  # fmt: skip
    broker, _ = broker_for(config)
    await started(broker)
    assert (await _token(broker, config, "sp"))["appid"] == "sp"

    wrong = config_for(
        entra,
        {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}},
        ca_file=str(other.ca_file),
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(entra.ca_file))  # must not rescue it
    broker2, _ = broker_for(wrong)
    await started(broker2)
    with pytest.raises(CredentialUnavailable, match="tls_error"):
        await _token(broker2, wrong, "sp")


async def test_on_behalf_of_with_a_certificate(make_entra, tmp_path, started):
    from tests.integration.tokens_support import user_identity

    entra = await make_entra()
    cert_file, cert_pem = write_cert(entra, tmp_path, "gateway-app")
    entra.register_app("gw", certificate_pem=cert_pem, identifier_uris=("api://azdo-gateway",))
    config = config_for(
        entra,
        {"caller": {"type": "on_behalf_of", "client_id": "gw", "certificate_file": str(cert_file)}},
        scopes=("vso.work",),
    )
    broker, _ = broker_for(config)
    await started(broker)
    token = await broker.acquire(user_identity(entra, "caller", "carol"), config.clients[0])
    claims = jwt.decode(
        token.header_value.removeprefix("Bearer "), options={"verify_signature": False}
    )
    assert (claims["oid"], claims["scp"], claims["appid"]) == ("carol", "vso.work", "gw")
    assert jwt.get_unverified_header(entra.assertions[-1])["alg"] == "PS256"


async def test_managed_identity_through_the_instance_metadata_service(
    make_entra, monkeypatch, started
):
    entra = await make_entra()
    mi = entra.register_managed_identity(client_id="vm-uami")
    # Azure VM / AKS node: no IDENTITY_ENDPOINT, MSAL asks the instance metadata service
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", entra.url)
    config = config_for(entra, {"vm": {"type": "managed_identity", "client_id": "vm-uami"}})
    broker, _ = broker_for(config)
    await started(broker)
    assert (await _token(broker, config, "vm"))["oid"] == mi.object_id
    assert entra.requests_by[("managed_identity", "vm-uami")] == 1


async def test_closing_a_provider_mid_acquisition_keeps_its_ca_bundle_until_it_ends(
    make_entra, monkeypatch
):
    """A broker closed (shutdown, reload) while an acquisition runs in its thread: the
    CA bundle that acquisition's connection loads is removed only once it is done."""
    entra = await make_entra()
    entra.register_app("sp", secret="s")
    config = config_for(
        entra, {"sp": {"type": "client_secret", "client_id": "sp", "client_secret": "s"}}
    )
    provider = ConfidentialCredential(
        "sp", config.gateway.credentials["sp"], config.gateway.identity
    )
    provider.close_wait_s = 0  # close() returns at once: the acquisition in flight releases
    connecting, go = threading.Event(), threading.Event()
    real_request = IdentitySession.request

    def held_request(self, method, url, *args, **kwargs):
        if method == "POST":  # the token request (discovery is done by then)
            connecting.set()
            assert go.wait(30)
        return real_request(self, method, url, *args, **kwargs)

    monkeypatch.setattr(IdentitySession, "request", held_request)
    acquiring = asyncio.ensure_future(asyncio.to_thread(provider.acquire, (DEFAULT_SCOPE,)))
    try:
        assert await asyncio.to_thread(connecting.wait, 30)
        assert provider._trust is not None
        bundle = Path(str(provider._trust.verify))
        await asyncio.to_thread(provider.close)
        assert bundle.is_file()
    finally:
        go.set()
    token = await asyncio.wait_for(acquiring, 30)
    assert jwt.decode(token.access_token, options={"verify_signature": False})["appid"] == "sp"
    assert not bundle.exists()
