"""Client certificates on the TLS listener identify clients (listen.tls.client_ca_file)."""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.authn.api_key import key_sha256, new_key
from gateway.demo.pki import DemoCA, IssuedCert

URL = "/fabrikam/_apis/projects"


def fingerprint(issued: IssuedCert) -> str:
    der = issued.cert.public_bytes(serialization.Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@pytest.fixture
async def tls_gateway(tmp_path, make_fake_azdo, make_gateway):
    server_ca, client_ca = DemoCA("server CA"), DemoCA("client CA")
    server_pem = server_ca.issue_server().write(tmp_path / "server.pem")
    client_ca_file = client_ca.write_cert(tmp_path / "client-ca.pem")
    certs = {name: client_ca.issue_client(name) for name in ("build-agent", "pinned", "stranger")}
    certs["other-ca"] = DemoCA("another CA").issue_client("build-agent")
    key = new_key()
    fake = await make_fake_azdo()
    gw = await make_gateway(
        {
            "listen": {
                "tls": {
                    "cert_file": str(server_pem),
                    "key_file": str(server_pem),
                    "client_ca_file": str(client_ca_file),
                }
            },
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        {
            "clients.yaml": {
                "clients": [
                    {
                        "name": "agents",
                        "credential": "server",
                        "certificates": [{"subject": "/O=azdo-gateway demo/CN=build-agent"}],
                    },
                    {
                        "name": "pinned",
                        "credential": "server",
                        "certificates": [
                            {
                                "sha256_fingerprint": fingerprint(certs["pinned"]),
                                "subject": "CN=pinned, O=azdo-gateway demo",
                            }
                        ],
                    },
                    {
                        "name": "keyed",
                        "credential": "server",
                        "api_keys": [{"id": "k1", "sha256": key_sha256(key)}],
                    },
                ]
            }
        },
    )
    server_ca_file = server_ca.write_cert(tmp_path / "server-ca.pem")
    return gw, certs, key, server_ca_file, tmp_path


async def call(
    gw, server_ca_file: Path, cert: IssuedCert | None, tmp_path: Path, headers: dict | None = None
) -> tuple[int, dict, dict]:
    ctx = ssl.create_default_context(cafile=str(server_ca_file))
    if cert is not None:
        name = x509.Name.rfc4514_string(cert.cert.subject).replace(",", "_").replace("=", "-")
        ctx.load_cert_chain(cert.write(tmp_path / f"client-{name}.pem"))
    async with aiohttp.ClientSession() as s, s.get(gw.url + URL, ssl=ctx, headers=headers) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else {}
        return r.status, dict(r.headers), body


def audit(gw, request_id: str) -> dict:
    lines = (Path(gw.config_path).parent / "audit.jsonl").read_text().splitlines()
    return next(a for a in map(json.loads, lines) if a["requestId"] == request_id)


@pytest.mark.parametrize("who,client", [("build-agent", "agents"), ("pinned", "pinned")])
async def test_certificate_identifies_client_by_subject_or_fingerprint(tls_gateway, who, client):
    gw, certs, _, server_ca, tmp = tls_gateway
    assert gw.url.startswith("https://")
    status, headers, body = await call(gw, server_ca, certs[who], tmp)
    assert status not in (401, 429) and body.get("reason") != "unknown_client", body
    line = audit(gw, headers["X-Request-ID"])
    assert (line["client"], line["authMethod"]) == (client, "certificate")
    assert line["subject"] == fingerprint(certs[who]).replace(":", "").lower()


async def test_a_verified_certificate_of_no_client_is_403(tls_gateway):
    gw, certs, _, server_ca, tmp = tls_gateway
    status, _, body = await call(gw, server_ca, certs["stranger"], tmp)
    assert status == 403 and body["reason"] == "unknown_client"
    assert "CN=stranger" in body["error"]


async def test_without_certificate_keys_still_work_and_nothing_is_401(tls_gateway):
    gw, _, key, server_ca, tmp = tls_gateway
    status, _, body = await call(gw, server_ca, None, tmp)
    assert status == 401 and body["reason"] == "unauthenticated"
    status, headers, _ = await call(gw, server_ca, None, tmp, {"Authorization": f"Bearer {key}"})
    assert audit(gw, headers["X-Request-ID"])["client"] == "keyed"


async def test_a_certificate_from_another_ca_fails_the_handshake(tls_gateway):
    gw, certs, _, server_ca, tmp = tls_gateway
    with pytest.raises(aiohttp.ClientError):
        await call(gw, server_ca, certs["other-ca"], tmp)
