"""Request body limits per route class, through the real catalog and policy: a REST call
over its class limit gets 413 and never reaches Azure DevOps, while a git push or a package
publish many times larger goes through; each class's own limit holds, also after a reload."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.reload import Reloader
from tests.fakes.azdo import FakeAzdo
from tests.harness import RunningGateway, new_key
from tests.integration.ops_support import metric, metric_values
from tests.integration.test_proxy_git import PAT, REPO, git, remote

REST_LIMIT = 64 * 1024
PUSHES = "/fabrikam/Fabrikam-Fiber/_apis/git/repositories/fiber/pushes?api-version=7.1"


async def start(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path, body_bytes: dict[str, int | None]
) -> tuple[RunningGateway, FakeAzdo, str]:
    (tmp_path / "repos").mkdir()
    fake = await make_fake_azdo(repos=tmp_path / "repos")
    fake.add_repo("fiber", {"README.md": "# Fabrikam Fiber\n"})
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": PAT}},
            "limits": {"body_bytes": body_bytes},
        },
        {
            "clients.yaml": {
                "clients": [
                    {
                        "name": "writer",
                        "credential": "server",
                        "scopes": ["vso.code_write"],
                        "api_keys": [{"id": "w1", "sha256": digest}],
                    },
                ]
            }
        },
    )
    return gw, fake, key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth("", key), "Content-Type": "application/json"}


async def denied(s: aiohttp.ClientSession, gw: RunningGateway) -> float:
    async with s.get(gw.admin_url + "/metrics") as r:
        values = metric_values(await r.text())
    return metric(values, "azdo_gateway_denied_total", client="writer", reason="payload_too_large")


async def test_rest_body_over_its_class_limit_is_413_and_git_push_passes(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path
) -> None:
    gw, fake, key = await start(make_fake_azdo, make_gateway, tmp_path, {"rest": REST_LIMIT})
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + PUSHES, data=b" " * (REST_LIMIT + 1), headers=auth(key)) as r:
            assert r.status == 413
            body = await r.json()
            assert body["reason"] == "payload_too_large"
            assert f"larger than {REST_LIMIT} bytes (rest limit)" in body["error"]
        assert fake.seen == []  # refused on the declared length, before upstream
        async with s.post(gw.url + PUSHES, data=b" " * REST_LIMIT, headers=auth(key)) as r:
            assert r.status != 413
        assert [x.body_len for x in fake.seen] == [REST_LIMIT]
        assert await denied(s, gw) == 1

    # A push whose pack is 24x the REST limit: git sends it chunked (over http.postBuffer).
    await git("clone", "-q", remote(gw, key), "work", cwd=tmp_path, home=tmp_path)
    work = tmp_path / "work"
    (work / "data.bin").write_bytes(os.urandom(24 * REST_LIMIT))
    await git("add", "data.bin", cwd=work, home=tmp_path)
    await git("commit", "-q", "-m", "large file", cwd=work, home=tmp_path)
    await git("push", "-q", "origin", "main", cwd=work, home=tmp_path)
    _, subject = await git(
        "log", "-1", "--format=%s", "main", cwd=tmp_path / "repos" / "fiber.git", home=tmp_path
    )
    assert subject.strip() == "large file"
    [*_, push] = [x for x in fake.seen if x.path == REPO + "/git-receive-pack"]
    assert push.headers.get("Transfer-Encoding") == "chunked"


async def test_chunked_rest_body_over_its_class_limit_is_cut_off(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path
) -> None:
    gw, fake, key = await start(make_fake_azdo, make_gateway, tmp_path, {"rest": REST_LIMIT})

    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 4096

    async with aiohttp.ClientSession() as s:
        try:
            async with s.post(gw.url + PUSHES, data=body(), headers=auth(key)) as r:
                assert r.status == 413
                error = (await r.json())["error"]
                assert error == f"request body is larger than {REST_LIMIT} bytes (rest limit)"
        except aiohttp.ClientError:
            pass  # the gateway may close before the client finished sending
        assert all(x.body_len <= REST_LIMIT for x in fake.seen)
        assert await denied(s, gw) == 1


async def test_git_class_limit_stops_an_oversized_push(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path
) -> None:
    gw, fake, key = await start(
        make_fake_azdo, make_gateway, tmp_path, {"rest": None, "git": 256 * 1024}
    )
    await git("clone", "-q", remote(gw, key), "work", cwd=tmp_path, home=tmp_path)
    work = tmp_path / "work"
    (work / "data.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    await git("add", "data.bin", cwd=work, home=tmp_path)
    await git("commit", "-q", "-m", "too large", cwd=work, home=tmp_path)
    code, _ = await git("push", "-q", "origin", "main", cwd=work, home=tmp_path, check=False)
    assert code != 0
    _, subject = await git(
        "log", "-1", "--format=%s", "main", cwd=tmp_path / "repos" / "fiber.git", home=tmp_path
    )
    assert subject.strip() != "too large"
    async with aiohttp.ClientSession() as s:
        assert await denied(s, gw) == 1


@pytest.mark.parametrize("limit", [None, 0])
async def test_unmatched_class_applies_to_route_allowed_requests(
    make_fake_azdo: Any, make_gateway: Any, limit: int | None
) -> None:
    fake = await make_fake_azdo()
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": PAT}},
            "limits": {"body_bytes": {"rest": 0, "unmatched": limit}},
        },
        {
            "clients.yaml": {
                "clients": [
                    {
                        "name": "writer",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "api_keys": [{"id": "w1", "sha256": digest}],
                    }
                ],
                "routes": [
                    {
                        "name": "hooks",
                        "match": {"method": "POST", "path": "/_custom/**"},
                        "allow": True,
                        "clients": ["writer"],
                    }
                ],
            }
        },
    )
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + "/_custom/hook", data=b"{}", headers=auth(key)) as r:
            assert r.status == (413 if limit == 0 else 200)
    assert len(fake.seen) == (0 if limit == 0 else 1)


async def test_package_publish_passes_and_a_reload_changes_the_limits(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    fake = await make_fake_azdo()
    key, digest = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url, "pkgs": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": PAT}},
            "limits": {"body_bytes": {"rest": REST_LIMIT}},
        },
        {
            "clients.yaml": {
                "clients": [
                    {
                        "name": "writer",
                        "credential": "server",
                        "scopes": ["vso.packaging_write"],
                        "api_keys": [{"id": "w1", "sha256": digest}],
                    }
                ]
            }
        },
    )
    publish = gw.url + "/_hosts/pkgs/fabrikam/_packaging/feed/nuget/v2/"
    package = os.urandom(4 * REST_LIMIT)
    async with aiohttp.ClientSession() as s:
        async with s.put(publish, data=package, headers=auth(key)) as r:
            assert r.status == 200
        assert [x.body_len for x in fake.seen] == [len(package)]

        doc = yaml.safe_load(gw.config_path.read_text())
        doc["limits"]["body_bytes"]["packages"] = REST_LIMIT
        gw.config_path.write_text(yaml.safe_dump(doc))
        reloader = Reloader(gw.gateway, gw.config_path)
        try:
            assert await reloader.reload("test")
        finally:
            await reloader.close()
        async with s.put(publish, data=package, headers=auth(key)) as r:
            assert r.status == 413
            assert (await r.json())["error"].endswith(f"{REST_LIMIT} bytes (packages limit)")
        assert len(fake.seen) == 1
        assert await denied(s, gw) == 1
