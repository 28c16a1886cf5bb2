"""Entra ID access tokens through the running gateway, against the Entra ID stand-in."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import aiohttp
import pytest

URL = "/fabrikam/_apis/projects"
AUD = "api://azdo-gateway"
PIPELINE_APP = str(uuid.uuid4())
DEV_GROUP = str(uuid.uuid4())


async def start(make_entra, make_fake_azdo, make_gateway):
    entra = await make_entra()
    fake = await make_fake_azdo()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "identity": entra.identity(AUD),
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        {
            "clients.yaml": {
                "clients": [
                    {
                        "name": "pipelines",
                        "credential": "server",
                        "scopes": ["vso.build"],
                        "entra": {"app_ids": [PIPELINE_APP]},
                    },
                    {
                        "name": "developers",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "entra": {"groups": [DEV_GROUP]},
                    },
                ]
            }
        },
    )
    return entra, fake, gw


async def call(gw, authorization: str | None) -> tuple[int, dict, dict]:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as s, s.get(gw.url + URL, headers=headers) as r:
        body = await r.json(content_type=None) if r.content_type == "application/json" else {}
        return r.status, dict(r.headers), body


def audit(gw, request_id: str) -> dict:
    path = Path(gw.config_path).parent / "audit.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return next(a for a in lines if a["requestId"] == request_id)


async def accepted_as(gw, authorization: str, client: str) -> dict:
    status, headers, body = await call(gw, authorization)
    assert status not in (401, 403, 429) or body.get("reason") not in {
        "invalid_token",
        "token_expired",
        "unknown_client",
        "malformed_authorization",
        "unknown_key",
        "too_many_failed_authentications",
    }, body
    line = audit(gw, headers["X-Request-ID"])
    assert (line["client"], line["authMethod"]) == (client, "entra")
    return line


async def test_app_and_group_tokens_map_to_their_clients(make_entra, make_fake_azdo, make_gateway):
    entra, fake, gw = await start(make_entra, make_fake_azdo, make_gateway)
    app_token = entra.mint_access_token({"azp": PIPELINE_APP})
    line = await accepted_as(gw, f"Bearer {app_token}", "pipelines")
    claims = json.loads(base64.urlsafe_b64decode(app_token.split(".")[1] + "=="))
    assert line["subject"] == claims["oid"]
    v1_token = entra.mint_access_token({"appid": PIPELINE_APP}, version=1)
    await accepted_as(gw, f"Bearer {v1_token}", "pipelines")
    user_token = entra.mint_access_token({"groups": [str(uuid.uuid4()), DEV_GROUP]})
    await accepted_as(gw, f"Bearer {user_token}", "developers")
    # git sends a token as the Basic password
    await accepted_as(gw, aiohttp.encode_basic_auth("me", user_token), "developers")
    log = (Path(gw.config_path).parent / "audit.jsonl").read_text()
    for token in (app_token, v1_token, user_token):
        assert token not in log
        for seen in fake.seen:
            assert token not in json.dumps(seen.headers)


async def test_valid_token_of_no_client_is_403_unknown_client(
    make_entra, make_fake_azdo, make_gateway
):
    entra, _, gw = await start(make_entra, make_fake_azdo, make_gateway)
    status, _, body = await call(gw, f"Bearer {entra.mint_access_token()}")
    assert status == 403 and body["reason"] == "unknown_client"


def _tamper(token: str) -> str:
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["azp"] = PIPELINE_APP
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{sig}"


@pytest.mark.parametrize(
    "forge,reason,says",
    [
        (
            lambda e: _tamper(e.mint_access_token({"azp": str(uuid.uuid4())})),
            "invalid_token",
            "signature",
        ),
        (
            lambda e: e.mint_access_token({"azp": PIPELINE_APP}, tenant=str(uuid.uuid4())),
            "invalid_token",
            "issued",
        ),
        (
            lambda e: e.mint_access_token(
                {"azp": PIPELINE_APP, "iss": "https://evil.example/x/v2.0"}
            ),
            "invalid_token",
            "issued",
        ),
        (
            lambda e: e.mint_access_token({"azp": PIPELINE_APP}, audience="api://another-api"),
            "invalid_token",
            "audience",
        ),
        (
            lambda e: e.mint_access_token({"azp": PIPELINE_APP}, lifetime_s=-600),
            "token_expired",
            "expired",
        ),
        (
            lambda e: e.mint_access_token({"azp": PIPELINE_APP}, alg="none"),
            "invalid_token",
            "'none' is not allowed",
        ),
        (
            lambda e: e.mint_access_token({"azp": PIPELINE_APP}, alg="HS256"),
            "invalid_token",
            "'HS256' is not allowed",
        ),
    ],
)
async def test_bad_tokens_are_401(make_entra, make_fake_azdo, make_gateway, forge, reason, says):
    entra, fake, gw = await start(make_entra, make_fake_azdo, make_gateway)
    token = forge(entra)
    status, headers, body = await call(gw, f"Bearer {token}")
    assert status == 401 and body["reason"] == reason and says in body["error"], body
    assert "Bearer" in headers["WWW-Authenticate"] and token not in json.dumps(body)
    assert fake.seen == []


async def test_unknown_kid_then_rotation_at_the_provider_is_picked_up(
    make_entra, make_fake_azdo, make_gateway
):
    entra, _, gw = await start(make_entra, make_fake_azdo, make_gateway)
    await accepted_as(gw, f"Bearer {entra.mint_access_token({'azp': PIPELINE_APP})}", "pipelines")
    stranger = entra.mint_access_token({"azp": PIPELINE_APP}, kid="not-published-anywhere")
    status, _, body = await call(gw, f"Bearer {stranger}")
    assert status == 401 and "does not publish" in body["error"]
    entra.rotate_signing_key()  # the provider starts signing with a brand-new key
    rotated = entra.mint_access_token({"azp": PIPELINE_APP})
    await accepted_as(gw, f"Bearer {rotated}", "pipelines")


async def test_bad_tokens_count_towards_the_slowdown(make_entra, make_fake_azdo, make_gateway):
    entra, _, gw = await start(make_entra, make_fake_azdo, make_gateway)
    throttle = gw.gateway.runtime.authn.throttle
    throttle.max_failures = 3
    expired = entra.mint_access_token({"azp": PIPELINE_APP}, lifetime_s=-600)
    for _ in range(3):
        assert (await call(gw, f"Bearer {expired}"))[0] == 401
    status, headers, body = await call(
        gw, f"Bearer {entra.mint_access_token({'azp': PIPELINE_APP})}"
    )
    assert status == 429 and body["reason"] == "too_many_failed_authentications"
    assert int(headers["Retry-After"]) >= 1
