from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.authn.entra import EntraAuthenticator
from gateway.config.model import Config, GatewayConfig, PolicyFile
from gateway.errors import CredentialUnavailable, Denied, Unauthenticated

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
AUD = "api://azdo-gateway"
APP = "11111111-1111-1111-1111-111111111111"
USER_OID = "22222222-2222-2222-2222-222222222222"
GROUP = "33333333-3333-3333-3333-333333333333"


@dataclass
class Idp:
    """A minimal OpenID provider on loopback: discovery + JWKS, and a token minter."""

    url: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    fetches: int = 0
    down: bool = False

    def add_key(self) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": f"{self.url}/{TENANT}/v2.0",
            "aud": AUD,
            "tid": TENANT,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "azp": APP,
            "oid": str(uuid.uuid4()),
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    def mint(self, kid: str | None = None, alg: str = "RS256", key: Any = None, **over: Any) -> str:
        kid = kid or next(iter(self.keys))
        signing = key if key is not None else self.keys[kid]
        return jwt.encode(self.claims(**over), signing, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def idp(aiohttp_server):
    state = Idp()

    async def discovery(request: web.Request) -> web.Response:
        if state.down:
            return web.Response(status=503)
        v2 = request.path.endswith("/v2.0/.well-known/openid-configuration")
        issuer = f"{state.url}/{TENANT}/v2.0" if v2 else f"https://sts.windows.net/{TENANT}/"
        return web.json_response(
            {"issuer": issuer, "jwks_uri": f"{state.url}/common/discovery/keys"}
        )

    async def keys(request: web.Request) -> web.Response:
        state.fetches += 1
        return web.json_response(state.jwks())

    app = web.Application()
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", discovery)
    app.router.add_get("/{tenant}/.well-known/openid-configuration", discovery)
    app.router.add_get("/common/discovery/keys", keys)
    server = await aiohttp_server(app)
    state.url = str(server.make_url("")).rstrip("/")
    state.add_key()
    return state


def config(idp: Idp, audiences=(AUD,), tenant=TENANT) -> Config:
    pol = PolicyFile.model_validate(
        {
            "clients": [
                {"name": "by-user", "credential": "c", "entra": {"object_ids": [USER_OID]}},
                {"name": "by-app", "credential": "c", "entra": {"app_ids": [APP.upper()]}},
                {"name": "by-group", "credential": "c", "entra": {"groups": [GROUP]}},
            ]
        }
    )
    gw = GatewayConfig.model_validate(
        {"identity": {"authority_host": idp.url, "tenant_id": tenant, "audiences": list(audiences)}}
    )
    return Config(path=Path("gateway.yaml"), gateway=gw, clients=pol.clients, routes=())


@pytest.fixture
async def entra(idp):
    e = EntraAuthenticator(config(idp))
    yield e
    await e.close()


async def rejected(entra: EntraAuthenticator, token: str) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as err:
        await entra.verify(token)
    assert token not in err.value.to_json("r").decode()
    return err.value


async def test_app_token_maps_by_app_id_and_keeps_the_assertion(idp, entra):
    token = idp.mint()
    ident = await entra.verify(token)
    assert (ident.client, ident.auth_method, ident.tenant_id) == ("by-app", "entra", TENANT)
    assert ident.user_assertion == token and token not in repr(ident)
    assert ident.subject == ident.object_id


async def test_user_token_maps_by_oid_before_app_and_groups(idp, entra):
    ident = await entra.verify(idp.mint(oid=USER_OID, groups=[GROUP]))
    assert (ident.client, ident.subject) == ("by-user", USER_OID)
    ident = await entra.verify(idp.mint(azp="someone-else", appid=None, groups=["x", GROUP]))
    assert ident.client == "by-group"


async def test_v1_tokens_with_appid_and_sts_issuer_are_accepted(idp, entra):
    token = idp.mint(iss=f"https://sts.windows.net/{TENANT}/", azp=None, appid=APP, ver="1.0")
    assert (await entra.verify(token)).client == "by-app"


async def test_valid_token_of_no_client_is_403_unknown_client(idp, entra):
    with pytest.raises(Denied) as err:
        await entra.verify(idp.mint(azp="44444444-4444-4444-4444-444444444444"))
    assert err.value.reason == "unknown_client" and err.value.status == 403


async def test_a_token_is_verified_once_then_served_from_cache(idp, entra, monkeypatch):
    token = idp.mint()
    await entra.verify(token)
    calls = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append(1))
    for _ in range(3):
        assert (await entra.verify(token)).client == "by-app"
    assert calls == [] and idp.fetches == 1


@pytest.mark.parametrize(
    "change,reason,says",
    [
        (
            {"iss": "https://login.microsoftonline.com/another-tenant/v2.0"},
            "invalid_token",
            "issued",
        ),
        (
            {"iss": f"https://sts.windows.net/{TENANT}"},
            "invalid_token",
            "issued",
        ),  # no trailing slash
        ({"aud": "api://something-else"}, "invalid_token", "audience"),
        ({"exp": int(time.time()) - 300}, "token_expired", "expired"),
        ({"nbf": int(time.time()) + 600}, "invalid_token", "not valid yet"),
        ({"exp": None}, "invalid_token", "'exp'"),
        ({"tid": "55555555-5555-5555-5555-555555555555"}, "invalid_token", "tenant"),
    ],
)
async def test_claims_are_checked(idp, entra, change, reason, says):
    err = await rejected(entra, idp.mint(**change))
    assert err.reason == reason and says in err.message


async def test_small_clock_skew_is_tolerated(idp, entra):
    assert await entra.verify(idp.mint(exp=int(time.time()) - 20, nbf=int(time.time()) + 20))


async def test_wrong_signature_is_rejected(idp, entra):
    kid = next(iter(idp.keys))
    forged = idp.mint(kid=kid, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert "signature" in (await rejected(entra, forged)).message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_none_is_rejected(idp, entra):
    header = _b64(json.dumps({"alg": "none", "kid": next(iter(idp.keys))}).encode())
    token = f"{header}.{_b64(json.dumps(idp.claims()).encode())}."
    assert "'none' is not allowed" in (await rejected(entra, token)).message


async def test_hs256_signed_with_the_public_key_is_rejected(idp, entra):
    import hashlib
    import hmac

    kid = next(iter(idp.keys))
    pem = (
        idp.keys[kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        + "."
        + _b64(json.dumps(idp.claims()).encode())
    )
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    err = await rejected(entra, f"{signing_input}.{_b64(sig)}")
    assert "'HS256' is not allowed" in err.message


async def test_ps256_is_accepted(idp, entra):
    assert (await entra.verify(idp.mint(alg="PS256"))).client == "by-app"


async def test_unknown_kid_refetches_keys_and_picks_up_rotation(idp, entra):
    await entra.verify(idp.mint())
    assert idp.fetches == 1
    stranger = idp.mint(
        kid="never-published", key=rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    assert "does not publish" in (await rejected(entra, stranger)).message
    assert idp.fetches == 2
    await rejected(entra, stranger)  # still unknown right after a refetch: no new fetch
    assert idp.fetches == 2
    new_kid = idp.add_key()  # rotation at the provider
    del idp.keys[next(iter(idp.keys))]
    assert (await entra.verify(idp.mint(kid=new_kid))).client == "by-app"
    assert idp.fetches == 3


async def test_refetches_for_unknown_kids_are_rate_limited(idp, entra):
    await entra.verify(idp.mint())
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for i in range(10):
        await rejected(entra, idp.mint(kid=f"random-{i}", key=key))
    assert idp.fetches == 1 + entra.refresh_burst


async def test_concurrent_first_tokens_fetch_the_keys_once(idp, entra):
    tokens = [idp.mint() for _ in range(20)]
    results = await asyncio.gather(*(entra.verify(t) for t in tokens))
    assert {r.client for r in results} == {"by-app"} and idp.fetches == 1


async def test_unreachable_provider_is_503_not_401(idp, entra):
    idp.down = True
    with pytest.raises(CredentialUnavailable):
        await entra.verify(idp.mint())


async def test_tokens_are_refused_when_no_audience_is_configured(idp):
    e = EntraAuthenticator(config(idp, audiences=()))
    err = await rejected(e, idp.mint())
    assert "not configured" in err.message and idp.fetches == 0
    await e.close()


@pytest.mark.parametrize("token", ["eyJhbGciOiJSUzI1NiJ9.e30.", "eyJ!.x.y", "eyJhbGci.eyJ.sig"])
async def test_garbage_shaped_like_a_jwt_is_401(idp, entra, token):
    assert (await rejected(entra, token)).reason == "invalid_token"


async def test_a_cached_signature_with_another_payload_is_not_a_hit(idp, entra):
    token = idp.mint()
    await entra.verify(token)
    header, _, signature = token.split(".")
    forged_claims = idp.claims(oid=USER_OID)  # would map to another client
    forged_payload = _b64(json.dumps(forged_claims).encode())
    err = await rejected(entra, f"{header}.{forged_payload}.{signature}")
    assert "signature" in err.message


def test_token_cache_is_bounded_and_forgets_expired_tokens():
    from gateway.authn.entra import TokenCache
    from gateway.types import ClientIdentity

    cache = TokenCache(maxsize=3)
    ident = ClientIdentity(client="c", auth_method="entra", subject="s")
    cache.put("eyJh.p.old", ident, time.time() - 1)
    assert cache.get("eyJh.p.old") is None
    for i in range(10):
        cache.put(f"eyJh.p.s{i}", ident, time.time() + 60)
    assert len(cache) <= 3 and cache.get("eyJh.p.s9") is ident
    assert cache.get("eyJh.other.s9") is None  # same signature, other token
    cache.put("eyJh.p.", ident, time.time() + 60)  # unsigned: never cached
    assert cache.get("eyJh.p.") is None


async def test_routine_key_refresh_runs_in_the_background(idp, entra):
    await entra.verify(idp.mint())
    assert idp.fetches == 1
    entra.max_key_age_s = 0
    entra.refresh_min_interval_s = 0
    assert (await entra.verify(idp.mint())).client == "by-app"  # served with the keys at hand
    assert entra._background is not None
    await entra._background
    assert idp.fetches == 2 and entra._background is None


async def test_a_kid_unknown_at_first_load_does_not_refetch_again(idp, entra):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await rejected(entra, idp.mint(kid="nobody", key=key))
    await rejected(entra, idp.mint(kid="nobody", key=key))
    assert idp.fetches == 1


async def test_a_reloaded_authenticator_reuses_the_signing_keys(idp, entra):
    token = idp.mint()
    await entra.verify(token)
    successor = EntraAuthenticator(config(idp))
    successor.adopt(entra)
    assert (await successor.verify(token)).client == "by-app"  # verified again, keys reused
    assert idp.fetches == 1
    other_tenant = EntraAuthenticator(config(idp, tenant="contoso.onmicrosoft.com"))
    other_tenant.adopt(entra)
    assert other_tenant._signing is None
    await successor.close()
    await other_tenant.close()
