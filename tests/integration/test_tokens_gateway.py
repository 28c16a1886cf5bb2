"""Tokens end to end: the gateway, the fake Entra ID (MSAL unmodified) and the fake
Azure DevOps; 401 from upstream, readiness, managed identity, secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import jwt

from tests.harness import new_key

SECRET = "sp-secret-Zq8~value"


async def _gateway(make_entra, make_fake_azdo, make_gateway, credential, apps=None):
    entra = await make_entra()
    for client_id, secret in (apps or {}).items():
        entra.register_app(client_id, secret=secret)
    fake = await make_fake_azdo()
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "identity": entra.identity(),
            "credentials": {"upstream": credential},
        },
        {"ci.yaml": {"clients": [{"name": "ci", "credential": "upstream",
                                  "scopes": ["vso.project"],
                                  "api_keys": [{"id": "k1", "sha256": digest}]}]}},
    )  # fmt: skip
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    return entra, fake, gw, auth


async def test_401_from_azure_devops_drops_the_token_and_retries_with_a_new_one(
    make_entra, make_fake_azdo, make_gateway, caplog
):
    caplog.set_level(logging.DEBUG)
    credential = {"type": "client_secret", "client_id": "sp", "client_secret": SECRET}
    entra, fake, gw, auth = await _gateway(
        make_entra, make_fake_azdo, make_gateway, credential, {"sp": SECRET}
    )
    assert await gw.gateway.runtime.tokens.warm_up() == (True, "ok")
    url = gw.url + "/fabrikam/_apis/projects"
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers=auth) as r:
            assert r.status == 200
        first = fake.seen[-1].headers["Authorization"]
        fake.reject = {first}
        async with s.get(url, headers=auth) as r:
            assert r.status == 200
        second = fake.seen[-1].headers["Authorization"]
        gw.gateway.runtime.tokens.flush_metrics()  # cache hits are handed over once a second
        async with s.get(gw.admin_url + "/metrics") as r:
            metrics = await r.text()
    assert second != first and second.startswith("Bearer ")
    assert [x.headers["Authorization"] for x in fake.seen[-3:]] == [first, first, second]
    claims = jwt.decode(second.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["aud"] == "499b84ac-1321-427f-aa17-267ca6975798" and claims["appid"] == "sp"
    assert entra.requests_by[("client_credentials", "sp")] == 2
    assert 'azdo_gateway_token_acquisitions_total{credential="upstream",result="ok"} 2.0' in (
        metrics
    )
    assert 'azdo_gateway_token_cache_hits_total{credential="upstream"}' in metrics
    assert 'azdo_gateway_token_expiry_seconds{credential="upstream"}' in metrics
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET not in text
        assert first.removeprefix("Bearer ") not in text
        assert second.removeprefix("Bearer ") not in text


async def test_readyz_waits_for_the_first_token_and_503_until_then(
    make_entra, make_fake_azdo, make_gateway
):
    credential = {"type": "client_secret", "client_id": "sp", "client_secret": SECRET}
    entra, fake, gw, auth = await _gateway(make_entra, make_fake_azdo, make_gateway, credential)
    async with aiohttp.ClientSession() as s:
        await asyncio.wait_for(entra.wait_requests("client_credentials", 1), 10)
        async with s.get(gw.admin_url + "/readyz") as r:
            assert r.status == 503
            assert "upstream" in await r.text()
        async with s.get(gw.url + "/fabrikam/_apis/projects", headers=auth) as r:
            assert r.status == 503
            assert int(r.headers["Retry-After"]) >= 1
            body = await r.json()
        assert body["reason"] == "credential_unavailable"
        assert "unauthorized_client" in body["error"] and SECRET not in body["error"]
        assert fake.seen == []
        entra.register_app("sp", secret=SECRET)
        await gw.gateway.runtime.tokens.warm_up()
        async with s.get(gw.admin_url + "/readyz") as r:
            assert r.status == 200
        async with s.get(gw.admin_url + "/metrics") as r:
            metrics = await r.text()
    assert 'credential="upstream",result="unauthorized_client"' in metrics


async def test_managed_identity_through_the_gateway(
    make_entra, make_fake_azdo, make_gateway, monkeypatch
):
    credential = {"type": "managed_identity", "client_id": "mi-app"}
    entra, fake, gw, auth = await _gateway(
        make_entra, make_fake_azdo, make_gateway, {"type": "pat", "pat": "unused"}
    )
    await gw.close()
    entra.register_managed_identity(client_id="mi-app")
    monkeypatch.setenv("IDENTITY_ENDPOINT", entra.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", entra.identity_header)
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "identity": entra.identity(),
            "credentials": {"mi": credential},
        },
        {"ci.yaml": {"clients": [{"name": "ci", "credential": "mi", "scopes": ["vso.project"],
                                  "api_keys": [{"id": "k1", "sha256": digest}]}]}},
    )  # fmt: skip
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gw.url + "/fabrikam/_apis/projects",
            headers={"Authorization": aiohttp.encode_basic_auth("", key)},
        ) as r:
            assert r.status == 200
    token = fake.seen[-1].headers["Authorization"].removeprefix("Bearer ")
    assert jwt.decode(token, options={"verify_signature": False})["appid"] == "mi-app"
    assert entra.requests_by[("managed_identity", "mi-app")] == 1


async def test_on_behalf_of_end_to_end_each_user_gets_their_own_token(
    make_entra, make_fake_azdo, make_gateway
):
    """A user's Entra token is validated by the gateway, exchanged on their behalf for
    the client's granted scopes only, and each user's token reaches upstream for them."""
    entra = await make_entra()
    entra.register_app("gw-app", secret=SECRET, identifier_uris=("api://azdo-gateway",))
    fake = await make_fake_azdo()
    group = "developers-group"
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "identity": entra.identity("api://azdo-gateway"),
            "credentials": {"caller": {"type": "on_behalf_of", "client_id": "gw-app",
                                       "client_secret": SECRET}},
        },
        {"people.yaml": {"clients": [{"name": "developers", "credential": "caller",
                                      "scopes": ["vso.project"],
                                      "entra": {"groups": [group]}}]}},
    )  # fmt: skip
    users = {
        oid: entra.mint_access_token({"oid": oid, "groups": [group], "azp": "cli-app"})
        for oid in ("alice", "bob")
    }
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            for oid, token in users.items():
                async with s.get(
                    gw.url + "/fabrikam/_apis/projects",
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 200, await r.text()
                sent = fake.seen[-1].headers["Authorization"].removeprefix("Bearer ")
                claims = jwt.decode(sent, options={"verify_signature": False})
                assert (claims["oid"], claims["scp"], claims["appid"]) == (
                    oid, "vso.project", "gw-app")  # fmt: skip
                assert sent != token  # the caller's own token never goes upstream
    assert entra.requests_by[("on_behalf_of", "alice")] == 1
    assert entra.requests_by[("on_behalf_of", "bob")] == 1
