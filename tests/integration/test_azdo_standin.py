"""The Azure DevOps stand-in's location service: what SDKs ask before their first call."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.fakes.azdo_standin import pat_header, running_azdo


async def test_per_area_discovery_lists_that_areas_locations(tmp_path: Path) -> None:
    async with running_azdo(tmp_path / "azdo") as azdo, aiohttp.ClientSession() as s:
        headers = {"Authorization": pat_header()}

        async def areas(host: str, path: str) -> list[tuple[str, str]]:
            async with s.options(azdo.hosts[host] + path, headers=headers) as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            assert body["count"] == len(body["value"])
            return sorted({(loc["area"], loc["resourceName"]) for loc in body["value"]})

        everything = await areas("main", "/fabrikam/_apis")
        assert {a for a, _ in everything} == {"Location", "core", "git", "build", "wit"}
        assert await areas("main", "/fabrikam/_apis/git") == [
            ("git", "commits"),
            ("git", "refs"),
            ("git", "repositories"),
        ]
        assert await areas("main", "/FABRIKAM/_APIS/Location/") == [
            ("Location", "ConnectionData"),
            ("Location", "ResourceAreas"),
        ]
        assert await areas("main", "/_apis/core") == [("core", "projects")]
        assert await areas("vsrm", "/fabrikam/_apis/release") == [
            ("Release", "definitions"),
            ("Release", "releases"),
        ]
        assert await areas("main", "/fabrikam/_apis/Release") == []  # served on vsrm only
        assert await areas("main", "/fabrikam/_apis/nosucharea") == []
