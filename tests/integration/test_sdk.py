"""The real azure-devops Python SDK, pointed at the gateway with a gateway key as its PAT."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.fakes.azdo_standin import RecordingAzdo, client, gateway_config, running_azdo
from tests.harness import new_key

pytestmark = pytest.mark.slow

SDK_SCOPES = [
    "vso.project",
    "vso.graph",
    "vso.code",
    "vso.build_execute",
    "vso.release",
    "vso.work",
]


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[RecordingAzdo]:
    async with running_azdo(tmp_path / "azdo") as standin:
        yield standin


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Isolate the SDK's caches and record the URL of every request it sends."""
    monkeypatch.setenv("AZURE_DEVOPS_CACHE_DIR", str(tmp_path / "sdk-cache"))
    import requests.adapters
    from azure.devops import client as sdk_client
    from azure.devops import connection as sdk_connection

    monkeypatch.setattr(sdk_client, "OPTIONS_FILE_CACHE", collections.defaultdict(dict))
    monkeypatch.setattr(sdk_connection, "RESOURCE_FILE_CACHE", collections.defaultdict(dict))
    monkeypatch.setattr(sdk_client.Client, "_locations_cache", {})
    monkeypatch.setattr(sdk_connection, "_deployment_level_resource_areas", {})
    sent: list[str] = []
    real_send = requests.adapters.HTTPAdapter.send

    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(request.url)
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", send)
    return sent


def _connection(url: str, key: str) -> Any:
    from azure.devops.connection import Connection
    from msrest.authentication import BasicAuthentication

    return Connection(base_url=url, creds=BasicAuthentication("", key))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def test_sdk_end_to_end_through_the_gateway(
    azdo: RecordingAzdo, make_gateway: Any, sdk: list[str]
) -> None:
    key, digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo), {"sdk.yaml": {"clients": [client("sdk-bot", digest, SDK_SCOPES)]}}
    )

    def run() -> dict[str, Any]:
        from azure.devops.v7_1.build.models import Build, DefinitionReference
        from azure.devops.v7_1.git.models import GitQueryCommitsCriteria

        conn = _connection(gw.url + "/fabrikam", key)
        out: dict[str, Any] = {}
        core = conn.clients_v7_1.get_core_client()
        out["projects"] = [p.name for p in core.get_projects()]
        graph = conn.clients_v7_1.get_graph_client()
        first = graph.list_users()
        rest = graph.list_users(continuation_token=first.continuation_token)
        out["users"] = [(u.display_name, u.url) for u in first.graph_users + rest.graph_users]
        out["more"] = (first.continuation_token, rest.continuation_token)
        git = conn.clients_v7_1.get_git_client()
        repos = git.get_repositories("Fabrikam-Fiber")
        out["repos"] = {r.name: (r.url, r.remote_url, r.web_url) for r in repos}
        repo = repos[0]
        commits = git.get_commits(
            repo.id, GitQueryCommitsCriteria(top=10), project="Fabrikam-Fiber"
        )
        out["commits"] = [(c.comment, c.url) for c in commits]
        out["refs"] = [r.name for r in git.get_refs(repo.id, project="Fabrikam-Fiber")]
        build = conn.clients_v7_1.get_build_client().queue_build(
            Build(definition=DefinitionReference(id=1)), "Fabrikam-Fiber"
        )
        out["build"] = (build.id, build.status, build.url, build.source_version)
        releases = conn.clients_v7_1.get_release_client().get_releases(project="Fabrikam-Fiber")
        out["releases"] = [(r.name, r.url) for r in releases]
        wi = conn.clients_v7_1.get_work_item_tracking_client().get_work_item(
            1, project="Fabrikam-Fiber"
        )
        out["work_item"] = (wi.fields["System.Title"], wi.url, wi._links.additional_properties)
        # no project: GET /fabrikam/_apis/wit/workItems?ids=1,2, a form of wit.WorkItems_List
        wis = conn.clients_v7_1.get_work_item_tracking_client().get_work_items([1, 2])
        out["work_items"] = [(w.id, w.fields["System.Title"]) for w in wis]
        return out

    out = await asyncio.to_thread(run)
    gw_url = gw.url
    assert out["projects"] == ["Fabrikam-Fiber", "Contoso-Ops", "Tailspin"]
    # x-ms-continuationtoken passes through: two pages of users from the vssps host
    assert out["more"] == ("2", None)
    assert [n for n, _ in out["users"]] == ["Fabrikam Dev", "Fabrikam Build Bot", "Ana Ops"]
    assert all(
        u.startswith(gw_url + "/_hosts/vssps/fabrikam/_apis/Graph/Users/") for _, u in out["users"]
    )
    url, remote, web = out["repos"]["Fabrikam-Fiber"]
    assert url.startswith(gw_url + "/fabrikam/") and "/_apis/git/repositories/" in url
    host = gw_url.split("://")[1]
    assert remote == f"http://fabrikam@{host}/fabrikam/Fabrikam-Fiber/_git/Fabrikam-Fiber"
    assert web.startswith(azdo.hosts["main"])  # for browsers: the real site
    assert [c for c, _ in out["commits"]] == ["Change 3", "Change 2", "Change 1"]
    assert all(u.startswith(gw_url + "/fabrikam/") for _, u in out["commits"])
    assert out["refs"] == ["refs/heads/main", "refs/tags/v1.0"]
    build_id, status, build_url, version = out["build"]
    assert (build_id, status) == (3, "notStarted") and build_url.startswith(gw_url)
    assert len(version) == 40
    assert [n for n, _ in out["releases"]] == ["Release-3", "Release-2", "Release-1"]
    assert all(u.startswith(gw_url + "/_hosts/vsrm/fabrikam/") for _, u in out["releases"])
    title, wi_url, links = out["work_item"]
    assert title == "Checkout fails for guest users" and wi_url.startswith(gw_url + "/fabrikam/")
    assert links["html"]["href"].startswith(azdo.hosts["main"])
    assert [i for i, _ in out["work_items"]] == [1, 2]
    assert out["work_items"][0][1] == title
    assert any("/fabrikam/_apis/wit/workItems?" in u and "ids=1%2C2" in u for u in sdk), sdk
    # The SDK found the release host through resourceAreas and only ever talked to the gateway.
    assert any("/_hosts/vsrm/fabrikam/" in u and "release/releases" in u.lower() for u in sdk)
    assert {_origin(u) for u in sdk} == {gw_url}
    # Upstream saw the injected PAT on every request, never the client's key.
    assert azdo.received and all(r.authorization.startswith("Basic ") for r in azdo.received)
    assert all(key not in json.dumps(r.headers) for r in azdo.received)
    assert {r.host for r in azdo.received} == {"main", "vsrm", "vssps"}
    assert all(r.headers.get("X-TFS-FedAuthRedirect") == "Suppress" for r in azdo.received)


async def test_denied_call_surfaces_the_gateway_reason(
    azdo: RecordingAzdo, make_gateway: Any, sdk: list[str]
) -> None:
    key, digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo),
        {"sdk.yaml": {"clients": [client("code-reader", digest, ["vso.code"])]}},
    )

    def run() -> Exception:
        from azure.devops.exceptions import AzureDevOpsServiceError
        from azure.devops.v7_1.build.models import Build, DefinitionReference

        build = _connection(gw.url + "/fabrikam", key).clients_v7_1.get_build_client()
        with pytest.raises(AzureDevOpsServiceError) as err:
            build.queue_build(Build(definition=DefinitionReference(id=1)), "Fabrikam-Fiber")
        return err.value

    err = await asyncio.to_thread(run)
    assert str(err).startswith("azdo-gateway: ") and "(reason: missing_scope)" in str(err)
    assert "vso.build_execute" in str(err)
    # Discovery went through; the denied call never reached upstream.
    assert [r.method for r in azdo.received if "/build/builds" in r.path_qs.lower()] == []
    assert azdo.org.builds[-1].id == 2
    assert {_origin(u) for u in sdk} == {gw.url}


async def test_wrong_key_is_an_sdk_authentication_error(
    azdo: RecordingAzdo, make_gateway: Any, sdk: list[str]
) -> None:
    _, digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo), {"sdk.yaml": {"clients": [client("sdk-bot", digest, SDK_SCOPES)]}}
    )

    def run() -> Exception:
        from azure.devops.exceptions import AzureDevOpsAuthenticationError

        conn = _connection(gw.url + "/fabrikam", "azgw_not_a_known_key")
        with pytest.raises(AzureDevOpsAuthenticationError) as err:
            conn.clients_v7_1.get_core_client().get_projects()
        return err.value

    err = await asyncio.to_thread(run)
    assert "requires user authentication" in str(err)
    assert azdo.received == []
