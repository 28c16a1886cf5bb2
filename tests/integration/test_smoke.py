from __future__ import annotations

import aiohttp

from tests.harness import key_client_policy, new_key


async def test_key_request_reaches_upstream_with_injected_pat(make_fake_azdo, make_gateway):
    fake = await make_fake_azdo()
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": "upstream-pat"}},
        },
        key_client_policy(digest, scopes=["vso.code"]),
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gw.url + "/fabrikam/_apis/projects",
            headers={"Authorization": aiohttp.encode_basic_auth("", key)},
        ) as r:
            assert r.status in (200, 403)
        async with s.get(gw.url + "/fabrikam/_apis/projects") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="azdo-gateway"')
    for seen in fake.seen:
        assert key not in str(seen.headers)
