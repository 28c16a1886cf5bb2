"""Package feeds through the gateway with the real clients: pip, twine, npm; NuGet v3 and
Maven at protocol level. The feed stand-in (tests/fakes/feeds.py) listens on 127.0.0.2
and the clients' own proxy settings send anything but the gateway (127.0.0.1) to a port
that refuses connections: a link left pointing at the feed fails the install."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests import processes
from tests.fakes.azdo_standin import UPSTREAM_PAT
from tests.fakes.feeds import PYPI_JSON, Feeds
from tests.harness import new_key, refusing_port
from tests.tools import require

pytestmark = pytest.mark.slow

FEED = "/fabrikam/_packaging/feed1"
PKGS = "/_hosts/pkgs" + FEED


# --- packages built here, offline ------------------------------------------------------


def wheel(name: str, version: str) -> tuple[str, bytes]:
    """A pure-Python wheel of one module `name` whose `VERSION` is `version`."""
    dist = f"{name.replace('-', '_')}-{version}"
    module = name.replace("-", "_")
    files = {
        f"{module}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: a test package\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = (
        "".join(
            f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},{len(body)}\n"
            for path, body in files.items()
        )
        + f"{dist}.dist-info/RECORD,,\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, body in files.items():
            zf.writestr(path, body)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return f"{dist}-py3-none-any.whl", buf.getvalue()


def tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, body in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(body)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def sdist(name: str, version: str) -> tuple[str, bytes]:
    base = f"{name.replace('-', '_')}-{version}"
    pkg_info = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    pyproject = f'[project]\nname = "{name}"\nversion = "{version}"\n'.encode()
    return f"{base}.tar.gz", tgz(
        {f"{base}/PKG-INFO": pkg_info, f"{base}/pyproject.toml": pyproject}
    )


# --- the stand-in and the gateway --------------------------------------------------------


@pytest.fixture
async def feeds() -> AsyncIterator[Feeds]:
    standin = Feeds()
    for version in ("0.9", "1.0"):
        name, body = wheel("demo-pkg", version)
        standin.files[f"pypi/demo-pkg/{version}/{name}"] = body
    name, body = sdist("demo-pkg", "1.0")
    standin.files[f"pypi/demo-pkg/1.0/{name}"] = body
    standin.files["npm/demo-npm/demo-npm-1.0.0.tgz"] = tgz(
        {
            "package/package.json": json.dumps({"name": "demo-npm", "version": "1.0.0"}).encode(),
            "package/index.js": b"module.exports = 'demo-npm 1.0.0';\n",
        }
    )
    standin.files["nuget/demo/1.0.0/demo.1.0.0.nupkg"] = b"PK\x03\x04 nupkg"
    standin.files["maven/com/example/demo/1.0/demo-1.0.jar"] = b"PK\x03\x04 jar"
    runner = web.AppRunner(standin.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    standin.url = f"http://127.0.0.2:{runner.addresses[0][1]}"
    try:
        yield standin
    finally:
        await runner.cleanup()


@pytest.fixture
def keys() -> dict[str, tuple[str, str]]:
    return {"reader": new_key(), "writer": new_key()}


@pytest.fixture
async def gw(feeds: Feeds, keys: dict[str, tuple[str, str]], make_gateway: Any) -> Any:
    clients = [
        {
            "name": name,
            "credential": "server",
            "scopes": ["vso.packaging" if name == "reader" else "vso.packaging_write"],
            "api_keys": [{"id": f"{name}-k1", "sha256": digest}],
        }
        for name, (_, digest) in keys.items()
    ]
    return await make_gateway(
        {
            "upstream": {"hosts": {"main": "https://dev.azure.com", "pkgs": feeds.url}},
            "credentials": {"server": {"type": "pat", "pat": UPSTREAM_PAT}},
        },
        {"feeds.yaml": {"clients": clients}},
    )


@pytest.fixture
def no_way_around() -> Iterator[dict[str, str]]:
    """Environment for a client: every host but the gateway's is behind a dead proxy."""
    with refusing_port() as port:
        dead = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env[name] = dead
        env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1"
        yield env


def basic(key: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth("build", key)}


def assert_all_through_gateway(feeds: Feeds) -> None:
    assert feeds.received, "the feed saw no request"
    strays = [s for s in feeds.received if not s.from_gateway]
    assert not strays, f"requests that went around the gateway: {strays}"


# --- pip and twine ---------------------------------------------------------------------


async def pip_install(gw: Any, key: str, env: dict[str, str], target: Path, *spec: str) -> str:
    index = gw.url.replace("http://", f"http://build:{key}@") + PKGS + "/pypi/simple/"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--isolated",
        "--index-url",
        index,
        "--target",
        str(target),
        *spec,
        env={**env, "PIP_CONFIG_FILE": os.devnull},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await processes.communicate(child, 120)
    text = out.decode(errors="replace")
    assert child.returncode == 0, text
    return text


@pytest.mark.parametrize("pep691", [False, True], ids=["pep503-html", "pep691-json"])
async def test_pip_installs_from_the_feed_through_the_gateway(
    feeds: Feeds,
    gw: Any,
    keys: dict[str, tuple[str, str]],
    no_way_around: dict[str, str],
    tmp_path: Path,
    pep691: bool,
) -> None:
    feeds.pep691 = pep691
    key = keys["reader"][0]
    # the newest wheel's link is absolute on the feed's host, the older one relative
    for version, form in (("1.0", "absolute"), ("0.9", "relative")):
        target = tmp_path / f"site-{version}"
        await pip_install(
            gw, key, no_way_around, target, f"demo-pkg=={version}", "--only-binary", ":all:"
        )
        assert (target / "demo_pkg" / "__init__.py").read_text() == f'VERSION = "{version}"\n', form
    downloads = [s.path for s in feeds.received if s.path.endswith(".whl")]
    assert downloads == [
        f"{FEED}/pypi/download/demo-pkg/1.0/demo_pkg-1.0-py3-none-any.whl",
        f"{FEED}/pypi/download/demo-pkg/0.9/demo_pkg-0.9-py3-none-any.whl",
    ]
    pages = [s for s in feeds.received if "/simple/" in s.path]
    assert pages and all(PYPI_JSON in s.accept for s in pages)  # pip asked for JSON first
    assert_all_through_gateway(feeds)


async def test_simple_page_links_point_at_the_gateway(
    feeds: Feeds, gw: Any, keys: dict[str, tuple[str, str]]
) -> None:
    feeds.pep691 = False
    async with aiohttp.ClientSession(headers=basic(keys["reader"][0])) as s:
        async with s.get(gw.url + PKGS + "/pypi/simple/demo-pkg/") as r:
            assert r.status == 200
            page = await r.text()
    assert feeds.url not in page
    assert (
        f'href="{gw.url}{PKGS}/pypi/download/demo-pkg/1.0/demo_pkg-1.0-py3-none-any.whl#sha256='
        in page
    )
    assert f'href="{PKGS}/pypi/download/demo-pkg/1.0/demo_pkg-1.0.tar.gz#sha256=' in page
    assert f'href="{PKGS}/pypi/download/demo-pkg/0.9/demo_pkg-0.9-py3-none-any.whl#sha256=' in page
    assert 'data-requires-python="&gt;=3.8"' in page


async def twine_upload(gw: Any, key: str, dist: Path, env: dict[str, str]) -> tuple[int, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "twine",
        "upload",
        "--non-interactive",
        "--disable-progress-bar",
        "--verbose",
        "--repository-url",
        gw.url + PKGS + "/pypi/upload/",
        "-u",
        "build",
        "-p",
        key,
        *(str(p) for p in sorted(dist.iterdir())),
        env={**env, "HOME": str(dist.parent), "COLUMNS": "400", "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await processes.communicate(child, 120)
    assert child.returncode is not None
    return child.returncode, out.decode(errors="replace")


async def test_twine_upload_needs_packaging_write(
    feeds: Feeds,
    gw: Any,
    keys: dict[str, tuple[str, str]],
    no_way_around: dict[str, str],
    tmp_path: Path,
) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    for name, body in (wheel("demo-pkg", "2.0"), sdist("demo-pkg", "2.0")):
        (dist / name).write_bytes(body)
    code, out = await twine_upload(gw, keys["reader"][0], dist, no_way_around)
    assert code != 0, out
    assert "403" in out and "missing_scope" in out and "vso.packaging_write" in out, out
    assert feeds.uploads == []
    code, out = await twine_upload(gw, keys["writer"][0], dist, no_way_around)
    assert code == 0, out
    assert [(m, p) for m, p, _ in feeds.uploads] == [("POST", f"{FEED}/pypi/upload/")] * 2
    assert_all_through_gateway(feeds)


# --- npm ---------------------------------------------------------------------------------


async def test_npm_installs_a_tarball_through_the_gateway(
    feeds: Feeds,
    gw: Any,
    keys: dict[str, tuple[str, str]],
    no_way_around: dict[str, str],
    tmp_path: Path,
) -> None:
    npm = require("npm", "apt-get install npm")
    project = tmp_path / "app"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "app", "version": "1.0.0", "dependencies": {"demo-npm": "1.0.0"}})
    )
    registry = gw.url + PKGS + "/npm/registry/"
    nerf = registry.removeprefix("http:")
    password = base64.b64encode(keys["reader"][0].encode()).decode()
    (project / ".npmrc").write_text(
        f"registry={registry}\n"
        "always-auth=true\n"
        f"{nerf}:username=build\n"
        f"{nerf}:_password={password}\n"
        f"{nerf}:email=npm requires email to be set but doesn't use the value\n"
    )
    env = {
        **no_way_around,
        "HOME": str(tmp_path),
        "npm_config_cache": str(tmp_path / "npm-cache"),
        "npm_config_proxy": no_way_around["http_proxy"],
        "npm_config_https_proxy": no_way_around["http_proxy"],
        "npm_config_noproxy": "127.0.0.1",
        "npm_config_update_notifier": "false",
    }
    child = await asyncio.create_subprocess_exec(
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--prefer-online",
        cwd=project,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await processes.communicate(child, 180)
    assert child.returncode == 0, out.decode(errors="replace")
    installed = json.loads((project / "node_modules" / "demo-npm" / "package.json").read_text())
    assert installed["version"] == "1.0.0"
    assert f"{FEED}/npm/registry/demo-npm/-/demo-npm-1.0.0.tgz" in [s.path for s in feeds.received]
    assert_all_through_gateway(feeds)


# --- NuGet v3 and Maven, at protocol level ----------------------------------------------


async def test_nuget_v3_service_index_and_downloads(
    feeds: Feeds, gw: Any, keys: dict[str, tuple[str, str]]
) -> None:
    reader, writer = basic(keys["reader"][0]), basic(keys["writer"][0])
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.url + PKGS + "/nuget/v3/index.json", headers=reader) as r:
            assert r.status == 200
            index = await r.json()
        ids = {res["@type"]: res["@id"] for res in index["resources"]}
        assert all(url.startswith(gw.url + PKGS + "/nuget/") for url in ids.values()), ids
        base = ids["PackageBaseAddress/3.0.0"]
        async with s.get(base + "demo/1.0.0/demo.1.0.0.nupkg", headers=reader) as r:
            assert r.status == 200 and await r.read() == b"PK\x03\x04 nupkg"
        publish = ids["PackagePublish/2.0.0"]
        async with s.put(publish, data=b"nupkg", headers=reader) as r:
            assert r.status == 403
            assert (await r.json())["reason"] == "missing_scope"
        async with s.put(publish, data=b"nupkg", headers=writer) as r:
            assert r.status == 201
    assert feeds.uploads == [("PUT", f"{FEED}/nuget/v2/", 5)]
    assert_all_through_gateway(feeds)


async def test_maven_download_and_deploy(
    feeds: Feeds, gw: Any, keys: dict[str, tuple[str, str]]
) -> None:
    reader, writer = basic(keys["reader"][0]), basic(keys["writer"][0])
    jar = gw.url + PKGS + "/maven/v1/com/example/demo/1.0/demo-1.0.jar"
    async with aiohttp.ClientSession() as s:
        async with s.get(jar, headers=reader) as r:
            assert r.status == 200 and await r.read() == b"PK\x03\x04 jar"
        async with s.put(jar.replace("1.0", "1.1"), data=b"jar", headers=reader) as r:
            assert r.status == 403
            assert "vso.packaging_write" in (await r.json())["requiredScopes"]
        async with s.put(jar.replace("1.0", "1.1"), data=b"jar", headers=writer) as r:
            assert r.status == 201
    assert feeds.uploads == [("PUT", f"{FEED}/maven/v1/com/example/demo/1.1/demo-1.1.jar", 3)]
    assert_all_through_gateway(feeds)
