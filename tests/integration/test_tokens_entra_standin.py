"""The Entra ID stand-in speaks enough of the protocol for unmodified MSAL and JWT checks."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import jwt
import msal
import pytest
import requests

from gateway.demo.entra import AZURE_DEVOPS_RESOURCE

ADO_DEFAULT = AZURE_DEVOPS_RESOURCE + "/.default"


_SESSIONS: list[requests.Session] = []


@pytest.fixture(autouse=True)
def _close_sessions():
    yield
    while _SESSIONS:
        _SESSIONS.pop().close()


def _session(ca_file: object) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = str(ca_file)
    _SESSIONS.append(s)
    return s


def _cca(entra, client_id: str, credential: object) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id,
        client_credential=credential,
        authority=entra.authority,
        instance_discovery=False,
        http_client=_session(entra.ca_file),
    )


async def _get_json(entra, path: str) -> dict:
    ctx = ssl.create_default_context(cafile=str(entra.ca_file))
    async with aiohttp.ClientSession() as s, s.get(entra.url + path, ssl=ctx) as r:
        assert r.status == 200
        return await r.json()


async def test_discovery_and_jwks_validate_minted_tokens(make_entra):
    entra = await make_entra()
    doc = await _get_json(entra, f"/{entra.tenant_id}/v2.0/.well-known/openid-configuration")
    assert doc["issuer"] == entra.issuer()
    assert doc["token_endpoint"] == entra.token_endpoint()
    token = entra.mint_access_token({"oid": "u1"})
    jwks = await _get_json(entra, doc["jwks_uri"].removeprefix(entra.url))
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(
        token, key, algorithms=["RS256"], audience="api://azdo-gateway", issuer=entra.issuer()
    )
    assert claims["oid"] == "u1" and claims["tid"] == entra.tenant_id

    old = entra.keys.current
    new = entra.rotate_signing_key()
    kids = {
        k["kid"]
        for k in (await _get_json(entra, f"/{entra.tenant_id}/discovery/v2.0/keys"))["keys"]
    }
    assert {old, new} <= kids
    assert jwt.get_unverified_header(entra.mint_access_token())["kid"] == new
    entra.keys.retire(old)
    kids = {
        k["kid"] for k in (await _get_json(entra, f"/{entra.tenant_id}/discovery/keys"))["keys"]
    }
    assert kids == {new}


async def test_forged_tokens_do_not_validate_against_jwks(make_entra):
    entra = await make_entra()
    jwks = jwt.PyJWKSet.from_dict(entra.keys.jwks())
    unknown = entra.mint_access_token(kid="not-published")
    with pytest.raises(KeyError):
        jwks[jwt.get_unverified_header(unknown)["kid"]]
    for alg in ("none", "HS256"):
        forged = entra.mint_access_token(alg=alg)
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(
                forged,
                jwks[entra.keys.current],
                algorithms=["RS256"],
                audience="api://azdo-gateway",
            )
    assert "exp" not in jwt.decode(
        entra.mint_access_token({"exp": None}), options={"verify_signature": False}
    )


async def test_msal_client_credentials_each_client_authentication(make_entra):
    entra = await make_entra()
    entra.register_app("secret-app", secret="s3cret")
    cert = entra.ca.issue_client("thumbprint-app")
    entra.register_app("cert-app", certificate_pem=cert.cert_pem)
    sni = entra.ca.issue_client("sni-subject")
    entra.register_app("sni-app", trusted_subject="sni-subject")
    entra.register_app("fed-app", federated_subject="system:serviceaccount:ci:gateway")
    fed = entra.mint_federated_token("system:serviceaccount:ci:gateway")

    def run() -> dict[str, dict]:
        pem = {"private_key": cert.key_pem.decode(), "public_certificate": cert.cert_pem.decode()}
        sni_pem = {"private_key": sni.key_pem.decode(), "public_certificate": sni.cert_pem.decode()}
        apps = {
            "secret-app": "s3cret",
            "cert-app": pem,
            "sni-app": sni_pem,
            "fed-app": {"client_assertion": lambda: fed},
        }
        out = {
            cid: _cca(entra, cid, cred).acquire_token_for_client([ADO_DEFAULT])
            for cid, cred in apps.items()
        }
        out["wrong-secret"] = _cca(entra, "secret-app", "nope").acquire_token_for_client(
            [ADO_DEFAULT]
        )
        out["untrusted-cert"] = _cca(entra, "cert-app", sni_pem).acquire_token_for_client(
            [ADO_DEFAULT]
        )
        return out

    results = await asyncio.to_thread(run)
    for cid in ("secret-app", "cert-app", "sni-app", "fed-app"):
        claims = jwt.decode(results[cid]["access_token"], options={"verify_signature": False})
        assert claims["aud"] == AZURE_DEVOPS_RESOURCE and claims["appid"] == cid
        assert claims["oid"] == entra.apps[cid].object_id
    assert results["wrong-secret"]["error_codes"] == [7000215]
    assert results["untrusted-cert"]["error_codes"] == [700027]
    assert entra.requests["client_credentials"] == 6


async def test_msal_on_behalf_of_returns_a_token_for_that_user(make_entra):
    entra = await make_entra()
    entra.register_app(
        "gw",
        secret="gw-secret",
        identifier_uris=("api://azdo-gateway",),
        delegated_scopes=frozenset({"vso.code", "vso.build"}),
    )
    alice = entra.mint_access_token({"oid": "alice-oid", "preferred_username": "alice@x"})

    def run() -> tuple[dict, dict]:
        app = _cca(entra, "gw", "gw-secret")
        ok = app.acquire_token_on_behalf_of(alice, [AZURE_DEVOPS_RESOURCE + "/vso.code"])
        denied = app.acquire_token_on_behalf_of(alice, [AZURE_DEVOPS_RESOURCE + "/vso.work"])
        return ok, denied

    ok, denied = await asyncio.to_thread(run)
    claims = jwt.decode(ok["access_token"], options={"verify_signature": False})
    assert (claims["oid"], claims["scp"], claims["appid"]) == ("alice-oid", "vso.code", "gw")
    assert denied["error_codes"] == [65001]
    assert entra.requests_by[("on_behalf_of", "alice-oid")] == 2


async def test_msal_managed_identity_app_service(make_entra, monkeypatch):
    entra = await make_entra()
    entra.register_managed_identity(client_id="mi-client")
    monkeypatch.setenv("IDENTITY_ENDPOINT", entra.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", entra.identity_header)

    def run() -> dict:
        mi = msal.UserAssignedManagedIdentity(client_id="mi-client")
        client = msal.ManagedIdentityClient(mi, http_client=_session(entra.ca_file))
        return client.acquire_token_for_client(resource=AZURE_DEVOPS_RESOURCE)

    result = await asyncio.to_thread(run)
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["appid"] == "mi-client"
    assert entra.requests_by[("managed_identity", "mi-client")] == 1


async def test_fault_injection_and_stall(make_entra):
    entra = await make_entra()
    entra.register_app("a", secret="s")
    entra.fail(times=1)

    def once() -> dict:
        return _cca(entra, "a", "s").acquire_token_for_client([ADO_DEFAULT])

    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        await asyncio.to_thread(once)
    entra.fail(times=1, status=401, error="invalid_client", code=7000215, description="bad")
    assert (await asyncio.to_thread(once))["error_codes"] == [7000215]
    assert "access_token" in await asyncio.to_thread(once)
    gate = entra.stall()
    pending = asyncio.ensure_future(asyncio.to_thread(once))
    await asyncio.wait_for(entra.wait_stalled(), 10)
    assert not pending.done()
    gate.set()
    assert "access_token" in await pending
