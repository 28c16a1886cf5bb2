"""`azdo-gateway report` from the audit file of a running gateway: the would-be denials
of a client in report mode (an unmatched call included) and of one in enforce mode,
with what would allow them; the grant and the route rules it recommends, pasted as
they are, let the same traffic through once the client is switched to enforce."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.cli import main
from tests.fakes.azdo_standin import RecordingAzdo, client, gateway_config, running_azdo
from tests.harness import new_key, start_gateway

REPOS = "/fabrikam/Fabrikam-Fiber/_apis/git/repositories?api-version=7.1"
QUEUE = "/fabrikam/Fabrikam-Fiber/_apis/build/builds?api-version=7.1"
FROB = "/fabrikam/Fabrikam-Fiber/_apis/frobnicate/{}"
OPS_REPOS = "/fabrikam/Contoso-Ops/_apis/git/repositories"
TRIAL_CALLS = [
    ("GET", REPOS, None),
    ("POST", QUEUE, {"definition": {"id": 1}}),
    ("GET", FROB.format(12), None),
    ("GET", FROB.format(13), None),
    ("GET", OPS_REPOS, None),
]


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[RecordingAzdo]:
    async with running_azdo(tmp_path / "azdo") as standin:
        yield standin


async def _calls(url: str, key: str, calls: list[tuple[str, str, Any]]) -> list[int]:
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    statuses = []
    async with aiohttp.ClientSession(headers=auth) as s:
        for method, path, body in calls:
            async with s.request(method, url + path, json=body) as r:
                statuses.append(r.status)
    return statuses


async def test_report_lists_would_be_denials_and_its_grant_keeps_the_tool_working(
    tmp_path: Path, azdo: RecordingAzdo, make_gateway: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    trial_key, trial_digest = new_key()
    strict_key, strict_digest = new_key()
    trial = client(
        "trial", trial_digest, ["vso.code"], mode="report", projects=["fabrikam/Fabrikam-Fiber"]
    )
    strict = client("strict", strict_digest, ["vso.code"])
    gw = await make_gateway(gateway_config(azdo), {"c.yaml": {"clients": [trial, strict]}})
    # report mode lets everything through (upstream answers what it answers)
    assert await _calls(gw.url, trial_key, TRIAL_CALLS) == [200, 200, 404, 404, 200]
    strict_calls = [
        ("GET", "/fabrikam/Fabrikam-Fiber/_apis/build/builds", None),
        ("GET", "/fabrikam/_apis/frobnicate/7/parts", None),
    ]
    assert await _calls(gw.url, strict_key, strict_calls) == [403, 403]
    gw.gateway.observability.audit.flush()
    audit = tmp_path / "audit.jsonl"

    assert main(["report", "--audit", str(audit), "-c", str(gw.config_path), "--json"]) == 0
    by = {c["client"]: c for c in json.loads(capsys.readouterr().out)["clients"]}
    got = {
        (d["reason"], d["method"], d["path"]): (d["count"], d["reportOnly"], d["fix"])
        for d in by["trial"]["wouldBeDenied"]
    }
    assert got == {
        ("no_matching_operation", "GET", "/{organization}/{project}/_apis/frobnicate/{id}"): (
            2,
            2,
            "no operation: add a route rule",
        ),
        ("missing_scope", "POST", "/{organization}/{project}/_apis/build/builds"): (
            1,
            1,
            "grant vso.build_execute",
        ),
        ("project_not_allowed", "GET", "/{organization}/{project}/_apis/git/repositories"): (
            1,
            1,
            "add fabrikam/Contoso-Ops to projects",
        ),
    }
    unmatched = next(d for d in by["trial"]["wouldBeDenied"] if d["routeRule"])
    assert unmatched["examples"] == [
        "/fabrikam/Fabrikam-Fiber/_apis/frobnicate/12",
        "/fabrikam/Fabrikam-Fiber/_apis/frobnicate/13",
    ]
    got = {(d["reason"], d["path"], d["fix"]) for d in by["strict"]["wouldBeDenied"]}
    assert got == {
        ("missing_scope", "/{organization}/{project}/_apis/build/builds", "grant vso.build"),
        (
            "no_matching_operation",
            "/{organization}/_apis/frobnicate/{id}/parts",
            "no operation: add a route rule",
        ),
    }
    assert all(d["reportOnly"] == 0 for d in by["strict"]["wouldBeDenied"])

    assert main(["report", "--audit", str(audit), "-c", str(gw.config_path)]) == 0
    text = capsys.readouterr().out
    assert (
        "#   no_matching_operation: GET /{organization}/{project}/_apis/frobnicate/{id}, 2x: "
        "no operation: add a route rule (rule 'trial-get-frobnicate' below)" in text
    )
    advice = yaml.safe_load(text)
    recommended = {c["name"]: c["scopes"] for c in advice["clients"]}
    assert recommended["trial"] == ["vso.build_execute", "vso.code"]
    trial_rules = [r for r in advice["routes"] if r["clients"] == ["trial"]]
    assert trial_rules == [
        {
            "name": "trial-get-frobnicate",
            "match": {"method": "GET", "path": "/{organization}/{project}/_apis/frobnicate/{id}"},
            "allow": True,
            "clients": ["trial"],
        }
    ]

    # paste the advice and switch to enforce: the same calls still go through
    enforced = client(
        "trial",
        trial_digest,
        recommended["trial"],
        projects=["fabrikam/Fabrikam-Fiber", "fabrikam/Contoso-Ops"],
    )
    second = tmp_path / "enforce"
    second.mkdir()
    gw2 = await start_gateway(
        second, gateway_config(azdo), {"c.yaml": {"clients": [enforced], "routes": trial_rules}}
    )
    try:
        assert await _calls(gw2.url, trial_key, TRIAL_CALLS) == [200, 200, 404, 404, 200]
    finally:
        await gw2.close()
