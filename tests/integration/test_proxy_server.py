"""The listeners: admin endpoints, TLS with required client certificates, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme

from tests.fakes.permissive import start_proxy
from tests.harness import new_key, pat_client_config, write_config
from tests.processes import communicate, reap, start_gateway


async def test_admin_endpoints(make_fake_azdo: Any, make_gateway: Any) -> None:
    proxy = await start_proxy(make_fake_azdo, make_gateway)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.gw.admin_url + "/healthz") as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok"}
        async with s.get(proxy.gw.admin_url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["ready"] is True
        async with s.get(proxy.url + "/_fake/headers", headers=proxy.auth) as r:
            assert r.status == 200
        async with s.get(proxy.gw.admin_url + "/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "azdo_gateway_requests_total" in await r.text()
        async with s.get(proxy.url + "/healthz") as r:  # admin paths are not on the proxy
            assert r.status == 401


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server = server_ca.issue_cert("127.0.0.1")
    files = {
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "client_ca": tmp_path / "client-ca.pem",
    }
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client_ca.cert_pem.write_to_path(str(files["client_ca"]))
    return {"server_ca": server_ca, "client_ca": client_ca, "files": files}


def client_tls(pki: dict[str, Any], with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    pki["server_ca"].configure_trust(context)
    if with_cert:
        pki["client_ca"].issue_cert("build-agent@fabrikam.example").configure_cert(context)
    return context


@pytest.mark.parametrize("required", [True, False])
async def test_tls_listener_with_client_certificates(
    make_fake_azdo: Any, make_gateway: Any, pki: dict[str, Any], required: bool
) -> None:
    files = pki["files"]
    proxy = await start_proxy(
        make_fake_azdo,
        make_gateway,
        listen={
            "tls": {
                "cert_file": str(files["cert"]),
                "key_file": str(files["key"]),
                "client_ca_file": str(files["client_ca"]),
                "require_client_cert": required,
            }
        },
    )
    assert proxy.url.startswith("https://127.0.0.1:")
    url = proxy.url + "/fabrikam/_apis/projects"
    for with_cert in (True, False):
        connector = aiohttp.TCPConnector(ssl=client_tls(pki, with_cert))
        async with aiohttp.ClientSession(connector=connector) as s:
            if required and not with_cert:
                with pytest.raises(aiohttp.ClientError):
                    async with s.get(url, headers=proxy.auth) as r:
                        await r.read()
                continue
            async with s.get(url, headers=proxy.auth) as r:
                assert r.status == 200
    assert len(proxy.fake.seen) == (1 if required else 2)


async def test_plain_http_to_the_tls_listener_is_refused(
    make_fake_azdo: Any, make_gateway: Any, pki: dict[str, Any]
) -> None:
    files = pki["files"]
    proxy = await start_proxy(
        make_fake_azdo,
        make_gateway,
        listen={"tls": {"cert_file": str(files["cert"]), "key_file": str(files["key"])}},
    )
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(proxy.url.replace("https:", "http:") + "/x", headers=proxy.auth) as r:
                await r.read()
    assert proxy.fake.seen == []


async def _refused(url: str) -> bool:
    host, port = url.split("//")[1].split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return True
    writer.close()
    return False


async def test_shutdown_stops_accepting_and_lets_requests_in_flight_finish(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    proxy = await start_proxy(make_fake_azdo, make_gateway)
    listeners = proxy.gw.listeners
    assert listeners is not None
    async with aiohttp.ClientSession() as s:
        call = asyncio.ensure_future(s.get(proxy.url + "/_fake/hold", headers=proxy.auth))
        await asyncio.wait_for(proxy.fake.held.wait(), 10)
        stopping = asyncio.ensure_future(listeners.proxy.cleanup())
        async with s.get(proxy.gw.admin_url + "/readyz") as r:
            assert r.status == 200  # the admin server outlives the proxy's drain
        while not await _refused(proxy.url):  # the listening socket closes first
            await asyncio.sleep(0.01)
        assert not stopping.done()
        proxy.fake.release()
        async with await asyncio.wait_for(call, 10) as r:
            assert r.status == 200
            assert await r.json() == {"held": True}
        await asyncio.wait_for(stopping, 10)


async def test_shutdown_cuts_requests_that_outlast_the_grace_period(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    proxy = await start_proxy(make_fake_azdo, make_gateway, limits={"shutdown_grace_s": 0.2})
    assert proxy.gw.listeners is not None
    async with aiohttp.ClientSession() as s:
        call = asyncio.ensure_future(s.get(proxy.url + "/_fake/hold", headers=proxy.auth))
        await asyncio.wait_for(proxy.fake.held.wait(), 10)
        await asyncio.wait_for(proxy.gw.listeners.stop(), 10)
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(call, 10)
    await asyncio.wait_for(proxy.fake.finished.wait(), 10)
    assert proxy.fake.cancelled == 1  # the upstream call was cancelled too


async def _line(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> str:
    while line := (await stream.readline()).decode():
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never logged; got:\n{''.join(seen)}")


@pytest.mark.slow
async def test_run_drains_on_sigterm_and_exits_0(make_fake_azdo: Any, tmp_path: Path) -> None:
    """The shipped `run`, with the real catalog and policy: SIGTERM mid-request."""
    fake = await make_fake_azdo()
    fake.hold_paths = {"/fabrikam/_apis/projects"}
    key, digest = new_key()
    cfg = write_config(
        tmp_path,
        *pat_client_config(fake.url, digest, scopes=["vso.project"], shutdown_grace_s=20),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    proc = await start_gateway(
        "run", "-c", str(cfg), "--workers", "1", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        line = await asyncio.wait_for(_line(proc.stderr, "serving on", log), 30)
        url = line.split("serving on ")[1].split()[0]
        admin = line.split("(admin ")[1].rstrip(")\n")
        auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
        async with aiohttp.ClientSession() as s:
            async with s.get(admin + "/readyz") as r:
                assert r.status == 200
            call = asyncio.ensure_future(
                s.get(url + "/fabrikam/_apis/projects?api-version=7.1", headers=auth)
            )
            await asyncio.wait_for(fake.held.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(_line(proc.stderr, "shutting down", log), 10)
            async with s.get(admin + "/readyz") as r:
                assert r.status == 503
                assert (await r.json())["detail"] == "shutting down"
            fake.release()
            async with await asyncio.wait_for(call, 10) as r:
                assert r.status == 200
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        rest = (await proc.stderr.read()).decode()
        assert "stopped" in rest, "".join(log) + rest
    finally:
        await reap(proc)


async def test_run_reports_a_bad_config_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text("listen: {port: 99999}\n")
    proc = await start_gateway("run", "-c", str(tmp_path / "gateway.yaml"))
    err = (await communicate(proc, 30))[1].decode()
    assert proc.returncode == 1
    assert "listen.port" in err
    assert "Traceback" not in err


async def test_oversized_request_line_and_headers_are_400(
    make_fake_azdo: Any, make_gateway: Any
) -> None:
    proxy = await start_proxy(
        make_fake_azdo, make_gateway, limits={"max_url_length": 2000, "max_header_bytes": 1000}
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(
            proxy.url + "/fabrikam/_apis/projects?q=" + "a" * 3000, headers=proxy.auth
        ) as r:
            assert r.status == 400
        async with s.get(
            proxy.url + "/fabrikam/_apis/projects", headers={**proxy.auth, "X-Big": "b" * 2000}
        ) as r:
            assert r.status == 400
        async with s.get(
            proxy.url + "/fabrikam/_apis/projects?q=" + "a" * 1500,
            headers={**proxy.auth, "X-Big": "b" * 900},
        ) as r:
            assert r.status == 200
    assert len(proxy.fake.seen) == 1
