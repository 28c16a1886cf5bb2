"""Projects named by id through a running gateway in front of the Azure DevOps stand-in:
a project-restricted client follows the URLs Azure DevOps answers with (which name
projects by GUID), unknown ids are denied with nothing but the lookup sent upstream,
concurrent requests share one lookup, and every lookup has its own audit line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.demo.azdo_data import stable_id
from gateway.projects import ProjectNames
from gateway.types import ProjectRef
from tests.fakes.azdo_standin import RecordingAzdo, client, gateway_config
from tests.harness import new_key

FIBER_ID = stable_id("fabrikam", "Fabrikam-Fiber")
OPS_ID = stable_id("fabrikam", "Contoso-Ops")
UNKNOWN_ID = "0f0f0f0f-1111-4222-8333-444455556666"


class HeldAzdo(RecordingAzdo):
    """The recording stand-in; a project lookup waits for `release` once `hold` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.hold = False
        self.lookup_arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def intercept(self, host: str, request: web.Request) -> web.StreamResponse | None:
        await super().intercept(host, request)
        if self.hold and "/_apis/projects/" in request.path:
            self.lookup_arrived.set()
            await self.release.wait()
        return None

    def lookups(self) -> list[str]:
        return [r.path_qs for r in self.received if "/_apis/projects/" in r.path_qs]


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[HeldAzdo]:
    standin = await HeldAzdo(tmp_path / "azdo").start()
    yield standin
    standin.release.set()
    await standin.close()


async def _gateway(azdo: HeldAzdo, make_gateway: Any, projects: list[str]) -> tuple[Any, Any]:
    key, digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo),
        {
            "c.yaml": {
                "clients": [
                    client(
                        "fiber-ci",
                        digest,
                        ["vso.build_execute", "vso.code", "vso.project"],
                        projects=projects,
                    )
                ]
            }
        },
    )
    return gw, {"Authorization": aiohttp.encode_basic_auth("", key)}


def _audit(gw: Any) -> list[dict[str, Any]]:
    gw.gateway.observability.audit.flush()
    path = gw.config_path.parent / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_project_restricted_client_follows_the_url_of_the_build_it_queued(
    azdo: HeldAzdo, make_gateway: Any
) -> None:
    gw, auth = await _gateway(azdo, make_gateway, ["fabrikam/Fabrikam-Fiber"])
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.post(
            gw.url + "/fabrikam/Fabrikam-Fiber/_apis/build/builds?api-version=7.1",
            json={"definition": {"id": 1}},
        ) as r:
            assert r.status == 200, await r.text()
            build = await r.json()
        url = build["url"]
        assert url.startswith(f"{gw.url}/fabrikam/{FIBER_ID}/_apis/build/"), url
        for _ in range(2):
            async with s.get(url) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["id"] == build["id"]
    # one lookup (the second request found the name cached), with the client's credential
    assert azdo.lookups() == [f"/fabrikam/_apis/projects/{FIBER_ID}?api-version=7.1"]
    lines = _audit(gw)
    lookup = [e for e in lines if e["kind"] == "project_lookup"]
    follow = [e for e in lines if e["kind"] == "request" and FIBER_ID in (e["path"] or "")]
    assert len(lookup) == 1 and len(follow) == 2
    assert lookup[0]["parentRequestId"] == follow[0]["requestId"]
    assert lookup[0]["client"] == "fiber-ci" and lookup[0]["credential"] == "server"
    assert lookup[0]["upstreamStatus"] == 200
    assert lookup[0]["operation"] == "core.Projects_Get"
    assert (lookup[0]["project"], lookup[0]["projectId"]) == ("Fabrikam-Fiber", FIBER_ID)
    for entry in follow:
        assert entry["decision"] == "allow"
        assert (entry["project"], entry["projectId"]) == ("Fabrikam-Fiber", FIBER_ID)


async def test_another_projects_id_is_denied_by_its_name(azdo: HeldAzdo, make_gateway: Any) -> None:
    gw, auth = await _gateway(azdo, make_gateway, ["fabrikam/Fabrikam-Fiber"])
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.get(f"{gw.url}/fabrikam/{OPS_ID}/_apis/build/builds") as r:
            assert r.status == 403
            body = await r.json()
    assert body["reason"] == "project_not_allowed"
    assert body["error"] == f"project 'Contoso-Ops' (id {OPS_ID}) is not allowed for this client"
    assert [r.path_qs.partition("?")[0] for r in azdo.received] == [
        f"/fabrikam/_apis/projects/{OPS_ID}"
    ]


async def test_an_unknown_id_is_denied_and_only_the_lookup_reaches_upstream(
    azdo: HeldAzdo, make_gateway: Any
) -> None:
    gw, auth = await _gateway(azdo, make_gateway, ["fabrikam/Fabrikam-Fiber"])
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.get(f"{gw.url}/fabrikam/{UNKNOWN_ID}/_apis/git/repositories") as r:
            assert r.status == 403
            body = await r.json()
    assert body["reason"] == "project_not_allowed"
    assert "could not be resolved" in body["error"]
    assert [r.path_qs for r in azdo.received] == [
        f"/fabrikam/_apis/projects/{UNKNOWN_ID}?api-version=7.1"
    ]
    lookup = next(e for e in _audit(gw) if e["kind"] == "project_lookup")
    assert lookup["upstreamStatus"] == 404 and lookup["projectId"] is None


async def test_projects_listed_by_id_allow_the_request_naming_the_project(
    azdo: HeldAzdo, make_gateway: Any
) -> None:
    gw, auth = await _gateway(azdo, make_gateway, [f"fabrikam/{FIBER_ID.upper()}"])
    async with aiohttp.ClientSession(headers=auth) as s:
        async with s.get(f"{gw.url}/fabrikam/{FIBER_ID}/_apis/git/repositories") as r:
            assert r.status == 200  # the id itself is listed: no lookup
        assert azdo.lookups() == []
        async with s.get(gw.url + "/fabrikam/Fabrikam-Fiber/_apis/git/repositories") as r:
            assert r.status == 200
        async with s.get(gw.url + "/fabrikam/Contoso-Ops/_apis/git/repositories") as r:
            assert r.status == 403
    assert azdo.lookups() == [
        "/fabrikam/_apis/projects/Fabrikam-Fiber?api-version=7.1",
        "/fabrikam/_apis/projects/Contoso-Ops?api-version=7.1",
    ]


class Counting(ProjectNames):
    """Sets `all_in` once `expected` requests have asked for a project."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected, self.asked = expected, 0
        self.all_in = asyncio.Event()

    async def resolve(self, *args: Any, **kwargs: Any) -> ProjectRef:
        self.asked += 1  # joining the flight follows without a pause
        if self.asked == self.expected:
            self.all_in.set()
        return await super().resolve(*args, **kwargs)


async def test_concurrent_requests_for_one_id_make_one_lookup(
    azdo: HeldAzdo, make_gateway: Any
) -> None:
    gw, auth = await _gateway(azdo, make_gateway, ["fabrikam/Fabrikam-Fiber"])
    n = 8
    gw.gateway.projects = names = Counting(n)
    azdo.hold = True
    async with aiohttp.ClientSession(headers=auth) as s:

        async def get() -> int:
            async with s.get(f"{gw.url}/fabrikam/{FIBER_ID}/_apis/build/builds") as r:
                return r.status

        calls = [asyncio.ensure_future(get()) for _ in range(n)]
        await azdo.lookup_arrived.wait()
        await names.all_in.wait()  # all n are waiting for the lookup held upstream
        azdo.release.set()
        assert await asyncio.gather(*calls) == [200] * n
    assert len(azdo.lookups()) == 1
    assert len([e for e in _audit(gw) if e["kind"] == "project_lookup"]) == 1
