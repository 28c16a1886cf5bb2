"""What clients get back through the gateway: URLs pointing at the gateway (never at a
Host header an attacker chose), redirects, compressed JSON, Azure DevOps' own headers and
error bodies."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.azdo_standin import RecordingAzdo, client, gateway_config, pat_header
from tests.harness import new_key

Script = Callable[[web.Request], web.StreamResponse]


class ScriptedAzdo(RecordingAzdo):
    """The stand-in, with canned answers for some (host, path) pairs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.scripts: dict[tuple[str, str], Script] = {}

    async def intercept(self, host: str, request: web.Request) -> web.StreamResponse | None:
        await super().intercept(host, request)
        script = self.scripts.get((host, request.path))
        return script(request) if script else None


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[ScriptedAzdo]:
    standin = await ScriptedAzdo(tmp_path / "azdo").start()
    yield standin
    await standin.close()


async def _gateway(
    azdo: ScriptedAzdo, make_gateway: Any, **listen: Any
) -> tuple[Any, dict[str, str]]:
    key, digest = new_key()
    extra = {"listen": listen} if listen else {}
    gw = await make_gateway(
        gateway_config(azdo, **extra),
        {"c.yaml": {"clients": [client("c", digest, ["vso.project", "vso.code", "vso.release"])]}},
    )
    return gw, {"Authorization": aiohttp.encode_basic_auth("", key)}


PROJECT = "/fabrikam/_apis/projects/Fabrikam-Fiber"


@pytest.mark.parametrize("host_header", ["evil.example", "ado-gw.example.com:8443"])
async def test_urls_point_at_the_listener_whatever_host_a_client_sends(
    azdo: ScriptedAzdo, make_gateway: Any, host_header: str
) -> None:
    gw, auth = await _gateway(azdo, make_gateway)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + PROJECT, headers={**auth, "Host": host_header}) as r:
            doc = await r.json()
    assert doc["url"].startswith(gw.url + "/fabrikam/_apis/projects/")
    assert doc["_links"]["web"]["href"].startswith(azdo.hosts["main"])  # for browsers


async def test_allowed_hosts_and_public_url(azdo: ScriptedAzdo, make_gateway: Any) -> None:
    gw, auth = await _gateway(azdo, make_gateway, allowed_hosts=["ado-gw.example.com:8443"])
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gw.url + PROJECT, headers={**auth, "Host": "ADO-GW.example.com:8443"}
        ) as r:
            assert (await r.json())["url"].startswith("http://ado-gw.example.com:8443/fabrikam/")
        async with s.get(gw.url + PROJECT, headers={**auth, "Host": "evil.example"}) as r:
            assert (await r.json())["url"].startswith(gw.url + "/fabrikam/")
    gw2, auth2 = await _gateway(azdo, make_gateway, public_url="https://ado-gw.example.com/ado/")
    async with aiohttp.ClientSession() as s:
        async with s.get(gw2.url + PROJECT, headers=auth2) as r:
            assert (await r.json())["url"].startswith("https://ado-gw.example.com/ado/fabrikam/")


async def test_redirects_are_rewritten_or_passed_through_but_never_followed(
    azdo: ScriptedAzdo, make_gateway: Any
) -> None:
    blob = "https://fabrikam.blob.core.windows.net/drops/a.zip?sv=2026&sig=abc"
    main, vsrm = azdo.hosts["main"], azdo.hosts["vsrm"]
    azdo.scripts[("main", "/fabrikam/_apis/projects/moved")] = lambda r: web.Response(
        status=301, headers={"Location": f"{main}{PROJECT}?x=1"}
    )
    azdo.scripts[("main", "/fabrikam/_apis/projects/download")] = lambda r: web.Response(
        status=302, headers={"Location": blob}
    )
    azdo.scripts[("vsrm", "/fabrikam/Fabrikam-Fiber/_apis/release/releases/9")] = lambda r: (
        web.Response(
            status=302, headers={"Location": "/fabrikam/Fabrikam-Fiber/_apis/release/releases/1"}
        )
    )
    azdo.scripts[("vsrm", "/fabrikam/Fabrikam-Fiber/_apis/release/releases/8")] = lambda r: (
        web.Response(status=303, headers={"Location": f"{vsrm}/fabrikam/x"})
    )
    gw, auth = await _gateway(azdo, make_gateway)
    got = {}
    async with aiohttp.ClientSession() as s:
        for path in (
            "/fabrikam/_apis/projects/moved",
            "/fabrikam/_apis/projects/download",
            "/_hosts/vsrm/fabrikam/Fabrikam-Fiber/_apis/release/releases/9",
            "/_hosts/vsrm/fabrikam/Fabrikam-Fiber/_apis/release/releases/8",
        ):
            async with s.get(gw.url + path, headers=auth, allow_redirects=False) as r:
                got[path.rsplit("/", 1)[1]] = (r.status, r.headers["Location"])
    assert got == {
        "moved": (301, f"{gw.url}{PROJECT}?x=1"),
        "download": (302, blob),  # not Azure DevOps: untouched, and the token never goes there
        "9": (302, "/_hosts/vsrm/fabrikam/Fabrikam-Fiber/_apis/release/releases/1"),
        "8": (303, f"{gw.url}/_hosts/vsrm/fabrikam/x"),
    }
    assert len(azdo.received) == 4  # one upstream request each: nothing was followed


async def test_compressed_json_is_rewritten_and_headers_pass(
    azdo: ScriptedAzdo, make_gateway: Any
) -> None:
    main = azdo.hosts["main"]

    def gzipped(request: web.Request) -> web.Response:
        body = json.dumps({"count": 1, "value": [{"url": f"{main}/fabrikam/_apis/x"}]})
        return web.Response(
            body=gzip.compress(body.encode()),
            headers={
                "Content-Type": "application/json; charset=utf-8; api-version=7.1",
                "Content-Encoding": "gzip",
                "x-ms-continuationtoken": "tok-2",
                "X-RateLimit-Remaining": "120",
                "X-RateLimit-Resource": "core",
                "Retry-After": "3",
                "X-TFS-ServiceError": "none",
                "X-VSS-UserData": "u:demo",
                "ActivityId": "act-1",
            },
        )

    azdo.scripts[("main", "/fabrikam/Fabrikam-Fiber/_apis/git/repositories")] = gzipped
    gw, auth = await _gateway(azdo, make_gateway)
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(
            gw.url + "/fabrikam/Fabrikam-Fiber/_apis/git/repositories",
            headers={**auth, "Accept-Encoding": "gzip"},
        ) as r:
            raw = await r.read()
            headers = r.headers
    assert headers["Content-Encoding"] == "gzip" and headers["Content-Length"] == str(len(raw))
    assert json.loads(gzip.decompress(raw))["value"][0]["url"] == gw.url + "/fabrikam/_apis/x"
    for name, value in (
        ("x-ms-continuationtoken", "tok-2"),
        ("X-RateLimit-Remaining", "120"),
        ("Retry-After", "3"),
        ("X-TFS-ServiceError", "none"),
        ("X-VSS-UserData", "u:demo"),
        ("ActivityId", "act-1"),
    ):
        assert headers[name] == value


async def test_azure_devops_errors_pass_unchanged_and_gateway_errors_say_so(
    azdo: ScriptedAzdo, make_gateway: Any
) -> None:
    gw, auth = await _gateway(azdo, make_gateway)
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + "/fabrikam/_apis/projects/NoSuchProject", headers=auth) as r:
            upstream_error = (r.status, await r.read())
        async with s.get(
            azdo.hosts["main"] + "/fabrikam/_apis/projects/NoSuchProject",
            headers={"Authorization": pat_header()},
        ) as r:
            direct = (r.status, await r.read())
        async with s.post(gw.url + "/fabrikam/_apis/projects", headers=auth, json={}) as r:
            ours = (r.status, await r.json())
    assert upstream_error == direct and upstream_error[0] == 404
    assert json.loads(upstream_error[1])["typeKey"] == "ProjectDoesNotExistWithNameException"
    status, body = ours
    assert status == 403 and body["source"] == "azdo-gateway" and body["reason"] == "missing_scope"
    assert body["message"].startswith("azdo-gateway: ")


async def test_a_large_json_page_is_rewritten(azdo: ScriptedAzdo, make_gateway: Any) -> None:
    main = azdo.hosts["main"]
    items = [
        {"id": i, "url": f"{main}/fabrikam/_apis/wit/workItems/{i}", "text": "x" * 200}
        for i in range(8000)
    ]
    body = json.dumps({"count": len(items), "value": items}).encode()
    assert len(body) > 2 << 20
    azdo.scripts[("main", "/fabrikam/Fabrikam-Fiber/_apis/git/repositories")] = lambda r: (
        web.Response(body=body, content_type="application/json")
    )
    gw, auth = await _gateway(azdo, make_gateway)
    async with aiohttp.ClientSession() as s:
        async with s.get(
            gw.url + "/fabrikam/Fabrikam-Fiber/_apis/git/repositories", headers=auth
        ) as r:
            raw = await r.read()
            assert r.headers["Content-Length"] == str(len(raw))
    value = json.loads(raw)["value"]
    assert len(value) == 8000
    assert value[-1]["url"] == f"{gw.url}/fabrikam/_apis/wit/workItems/7999"


async def test_bodies_that_cannot_be_rewritten_pass_unchanged_and_are_counted(
    azdo: ScriptedAzdo, make_gateway: Any
) -> None:
    main = azdo.hosts["main"]
    url = f"{main}/fabrikam/_apis/projects/p1"
    big = json.dumps({"url": url, "pad": "x" * 9_000_000}).encode()

    def chunked(request: web.Request) -> web.StreamResponse:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 1 << 20):
                yield big[i : i + (1 << 20)]

        # no Content-Length: the gateway finds it too large while buffering
        body = aiohttp.payload.AsyncIterablePayload(pieces())
        return web.Response(body=body, content_type="application/json")

    bodies: dict[str, tuple[bytes, Script]] = {}
    for name, body in {
        "scalar": json.dumps(url).encode(),
        "nan": b'{"url":"' + url.encode() + b'","ratio":NaN}',
        "utf8": b'{"url":"' + url.encode() + b'","name":"\xff"}',
        "big": big,
    }.items():
        bodies[name] = (
            body,
            lambda r, body=body: web.Response(body=body, content_type="application/json"),
        )
    bodies["chunked"] = (big, chunked)
    for name, (_, script) in bodies.items():
        azdo.scripts[("main", f"/fabrikam/_apis/projects/{name}")] = script
    gw, auth = await _gateway(azdo, make_gateway)
    async with aiohttp.ClientSession() as s:
        for name, (body, _) in bodies.items():
            async with s.get(f"{gw.url}/fabrikam/_apis/projects/{name}", headers=auth) as r:
                assert r.status == 200, name
                assert await r.read() == body, name
        async with s.get(gw.admin_url + "/metrics") as r:
            metrics = await r.text()
    for reason, count in (
        ("top_level_scalar", 1),
        ("not_json", 1),
        ("invalid_utf8", 1),
        ("too_large", 2),
    ):
        assert f'azdo_gateway_rewrite_skipped_total{{reason="{reason}"}} {count}.0' in metrics
