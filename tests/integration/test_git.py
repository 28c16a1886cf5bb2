"""Real git through the gateway against the stand-in's real repositories: clone (full,
shallow, protocol v2), fetch and push, allowed and denied by scope, with the key in the
URL or from a credential helper, and never a connection to anything but the gateway."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.demo.git_http import run_git
from tests.fakes.azdo_standin import RecordingAzdo, client, gateway_config, running_azdo
from tests.gitclient import git_call, git_env
from tests.harness import new_key

pytestmark = pytest.mark.slow

REPO_PATH = "/fabrikam/Fabrikam-Fiber/_git/Fabrikam-Fiber"


@dataclass
class Git:
    """git with an isolated HOME and global config, a credential helper and a curl trace."""

    home: Path
    trace: Path

    async def __call__(self, *args: str, cwd: Path | None = None) -> tuple[int, str]:
        env = git_env(
            self.home,
            GIT_CONFIG_GLOBAL=str(self.home / ".gitconfig"),
            GIT_TRACE_CURL=str(self.trace),
            GIT_TRACE_CURL_NO_DATA="1",
        )
        return await git_call(*args, cwd=cwd, env=env)

    def hosts_contacted(self) -> set[str]:
        text = self.trace.read_text(errors="replace") if self.trace.exists() else ""
        return set(re.findall(r"Send header: Host: (\S+)", text))


def make_git(tmp_path: Path, key: str | None = None) -> Git:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config = "[protocol]\n\tversion = 2\n"
    if key is not None:
        helper = home / "credential-helper"
        helper.write_text(
            f'#!/bin/sh\ntest "$1" = get && echo username=ci && echo password={key}\nexit 0\n'
        )
        helper.chmod(0o700)
        config += f"[credential]\n\thelper = {helper}\n"
    (home / ".gitconfig").write_text(config)
    return Git(home, tmp_path / "curl-trace.log")


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[RecordingAzdo]:
    async with running_azdo(tmp_path / "azdo") as standin:
        yield standin


async def remote_url(gw_url: str, key: str) -> str:
    """The repository's remoteUrl as the REST API hands it out through the gateway."""
    auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
    async with aiohttp.ClientSession() as s:
        url = f"{gw_url}/fabrikam/Fabrikam-Fiber/_apis/git/repositories?api-version=7.1"
        async with s.get(url, headers=auth) as r:
            assert r.status == 200, await r.text()
            repos = {x["name"]: x for x in (await r.json())["value"]}
    return str(repos["Fabrikam-Fiber"]["remoteUrl"])


async def test_clone_fetch_and_push_through_the_gateway(
    tmp_path: Path, azdo: RecordingAzdo, make_gateway: Any
) -> None:
    key, digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo),
        {"ci.yaml": {"clients": [client("builder", digest, ["vso.code_write"])]}},
    )
    git = make_git(tmp_path, key)
    host = gw.url.removeprefix("http://")
    # The remoteUrl points at the gateway, and a credential helper supplies the key.
    remote = await remote_url(gw.url, key)
    assert remote == f"http://fabrikam@{host}{REPO_PATH}"
    rc, out = await git("clone", "--quiet", remote, str(tmp_path / "full"))
    assert rc == 0, out
    # A shallow clone with the key in the URL.
    rc, out = await git(
        "clone",
        "--quiet",
        "--depth",
        "1",
        f"http://ci:{key}@{host}{REPO_PATH}",
        str(tmp_path / "shallow"),
    )
    assert rc == 0, out
    assert run_git("rev-list", "--count", "HEAD", cwd=tmp_path / "shallow").strip() == "1"
    # Push a commit (vso.code_write) ...
    work = tmp_path / "full"
    (work / "CHANGELOG.md").write_text("pushed through the gateway\n")
    assert (await git("add", "CHANGELOG.md", cwd=work))[0] == 0
    assert (await git("commit", "--quiet", "-m", "Pushed via gateway", cwd=work))[0] == 0
    rc, out = await git("push", "--quiet", "origin", "main", cwd=work)
    assert rc == 0, out
    head = run_git("rev-parse", "HEAD", cwd=work).strip()
    bare = azdo.org.projects[0].repos[0].path
    assert run_git("rev-parse", "main", cwd=bare).strip() == head
    # ... and the shallow clone fetches it.
    rc, out = await git("fetch", "--quiet", "origin", cwd=tmp_path / "shallow")
    assert rc == 0, out
    assert run_git("rev-parse", "origin/main", cwd=tmp_path / "shallow").strip() == head
    # The REST API (through the gateway) sees the pushed commit first.
    async with aiohttp.ClientSession() as s:
        auth = {"Authorization": aiohttp.encode_basic_auth("", key)}
        repo_id = azdo.org.projects[0].repos[0].id
        url = f"{gw.url}/fabrikam/Fabrikam-Fiber/_apis/git/repositories/{repo_id}/commits?$top=1"
        async with s.get(url, headers=auth) as r:
            first = (await r.json())["value"][0]
    assert first["commitId"] == head and first["url"].startswith(gw.url + "/fabrikam/")
    # git talked to the gateway only; upstream saw only the injected credential.
    assert git.hosts_contacted() == {host}
    assert all(key not in repr(r.headers) for r in azdo.received)
    assert any(r.path_qs.endswith("/git-receive-pack") for r in azdo.received)


async def test_push_is_denied_without_code_write_and_git_shows_why(
    tmp_path: Path, azdo: RecordingAzdo, make_gateway: Any
) -> None:
    key, digest = new_key()
    gw = await make_gateway(
        gateway_config(azdo),
        {"ci.yaml": {"clients": [client("reader", digest, ["vso.code"])]}},
    )
    git = make_git(tmp_path, key)
    rc, out = await git("clone", "--quiet", gw.url + REPO_PATH, str(tmp_path / "w"))
    assert rc == 0, out
    work = tmp_path / "w"
    (work / "x.txt").write_text("nope\n")
    await git("add", "x.txt", cwd=work)
    await git("commit", "--quiet", "-m", "Not allowed", cwd=work)
    bare = azdo.org.projects[0].repos[0].path
    before = run_git("rev-parse", "main", cwd=bare)
    rc, out = await git("push", "origin", "main", cwd=work)
    assert rc != 0
    assert "403" in out
    assert "remote: azdo-gateway:" in out and "reason: missing_scope" in out, out
    assert "vso.code_write" in out
    assert run_git("rev-parse", "main", cwd=bare) == before
    assert not any("receive-pack" in r.path_qs for r in azdo.received)
    assert git.hosts_contacted() == {gw.url.removeprefix("http://")}
