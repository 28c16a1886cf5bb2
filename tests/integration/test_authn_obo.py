"""A user's Entra ID token in, the same user's Azure DevOps token out (on-behalf-of)."""

from __future__ import annotations

import base64
import json
import uuid

import aiohttp

AUD = "api://azdo-gateway"
DEVS = str(uuid.uuid4())


def claims(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))


async def test_user_token_is_validated_then_exchanged_on_behalf_of_that_user(
    make_entra, make_fake_azdo, make_gateway
):
    entra = await make_entra()
    entra.register_app("gw", secret="gw-secret", identifier_uris=(AUD,))
    fake = await make_fake_azdo()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "identity": entra.identity(AUD),
            "credentials": {
                "caller": {"type": "on_behalf_of", "client_id": "gw", "client_secret": "gw-secret"}
            },
        },
        {
            "devs.yaml": {
                "clients": [
                    {
                        "name": "developers",
                        "credential": "caller",
                        "scopes": ["vso.code"],
                        "entra": {"groups": [DEVS]},
                    }
                ]
            }
        },
    )
    upstream_oids = []
    async with aiohttp.ClientSession() as s:
        for user in ("alice", "bob"):
            token = entra.mint_access_token({"oid": user, "groups": [DEVS]})
            async with s.get(
                gw.url + "/fabrikam/Fabrikam-Fiber/_apis/git/repositories?api-version=7.1",
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                assert r.status == 200, await r.text()
            sent = fake.seen[-1].headers["Authorization"]
            assert sent.startswith("Bearer ") and token not in sent
            upstream = claims(sent.removeprefix("Bearer "))
            assert upstream["aud"] != AUD  # a token for Azure DevOps, not the gateway's
            upstream_oids.append(upstream["oid"])
    assert upstream_oids == ["alice", "bob"]
