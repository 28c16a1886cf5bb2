"""The real azure-devops-node-api SDK (npm), pointed at the gateway with a gateway key.

The SDK discovers everything at run time: `OPTIONS /{org}/_apis/{area}` for the route
templates of each area it calls (Location, core, git, Release), `GET /{org}/_apis/
ResourceAreas` for the host of the release area (vsrm). tests/node/sdk.js refuses any
request to another origin than the gateway's, as an unreachable host would, and lists it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests import tools
from tests.fakes.azdo_standin import (
    UPSTREAM_PAT,
    RecordingAzdo,
    client,
    gateway_config,
    pat_header,
    running_azdo,
)
from tests.harness import new_key
from tests.processes import communicate

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCOPES = ["vso.project", "vso.code", "vso.release"]


@pytest.fixture(scope="session")
def node_sdk() -> str:
    """`node`, with tests/node's locked packages installed (`npm ci` when missing)."""
    node = tools.require("node", "apt-get install nodejs npm")
    npm = tools.require("npm", "apt-get install nodejs npm")
    if not (NODE_DIR / "node_modules" / "azure-devops-node-api" / "package.json").is_file():
        done = subprocess.run(  # noqa: S603 - a fixed command
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            message = f"npm ci in {NODE_DIR} failed: {done.stderr.strip()[-500:]}"
            if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
    return node


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[RecordingAzdo]:
    async with running_azdo(tmp_path / "azdo") as standin:
        yield standin


async def run_sdk(node: str, gateway_url: str, key: str) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "GATEWAY_URL": gateway_url, "GATEWAY_KEY": key}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "sdk.js"),
        cwd=NODE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(proc, 120)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    assert proc.returncode == 0 and "fatal" not in result, (result, err.decode())
    return result


async def test_node_sdk_through_the_gateway(
    node_sdk: str, azdo: RecordingAzdo, make_gateway: Any
) -> None:
    key, digest = new_key()
    limited_key, limited_digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo),
        {
            "node.yaml": {
                "clients": [
                    client("node-bot", digest, SCOPES),
                    client(
                        "fiber-bot", limited_digest, SCOPES, projects=["fabrikam/Fabrikam-Fiber"]
                    ),
                ]
            }
        },
    )
    out = await run_sdk(node_sdk, gw.url, key)
    assert out["escaped"] == []
    assert {line.split(" ", 1)[1].split("/fabrikam")[0] for line in out["sent"]} <= {
        gw.url + "/",
        gw.url,
        gw.url + "/_hosts/vsrm",
    }
    assert out["projects"] == {"ok": ["Fabrikam-Fiber", "Contoso-Ops", "Tailspin"]}
    fiber = [r.name for r in azdo.org.project("Fabrikam-Fiber").repos]
    assert [n for n, _ in out["repos"]] == fiber and len(fiber) >= 2
    assert all(u.startswith(gw.url + "/fabrikam/") for _, u in out["repos"])
    # GET /fabrikam/_apis/git/repositories: the form of git.Repositories_List without project
    assert out["orgRepos"] == {"ok": sorted(r.name for p in azdo.org.projects for r in p.repos)}
    assert [n for n, _ in out["releases"]] == ["Release-3", "Release-2", "Release-1"]
    assert all(u.startswith(gw.url + "/_hosts/vsrm/fabrikam/") for _, u in out["releases"])
    asked = [line.split(" ")[0] + " " + line.split(gw.url)[1] for line in out["sent"]]
    for discovery in (
        "OPTIONS /fabrikam/_apis/Location",
        "OPTIONS /fabrikam/_apis/core",
        "OPTIONS /fabrikam/_apis/git",
        "OPTIONS /_hosts/vsrm/fabrikam/_apis/Release",
    ):
        assert discovery in asked, asked
    assert any(a.startswith("GET /fabrikam/_apis/ResourceAreas") for a in asked), asked
    # everything that reached the stand-in came through the gateway, with the injected PAT
    assert azdo.received and all(r.authorization == pat_header() for r in azdo.received)
    assert {r.host for r in azdo.received} == {"main", "vsrm"}
    assert all(key not in json.dumps(r.headers) for r in azdo.received)
    assert UPSTREAM_PAT not in json.dumps(out)

    # a client limited to one project: the organization-wide form is outside it
    seen = len(azdo.received)
    limited = await run_sdk(node_sdk, gw.url, limited_key)
    assert limited["escaped"] == []
    assert limited["orgRepos"]["statusCode"] == 403
    assert "(reason: project_not_allowed)" in limited["orgRepos"]["error"]
    assert limited["projects"]["statusCode"] == 403  # listing projects is organization-wide
    assert [n for n, _ in limited["repos"]] == fiber
    paths = [r.path_qs.split("?")[0].lower() for r in azdo.received[seen:]]
    assert "/fabrikam/_apis/git/repositories" not in paths
