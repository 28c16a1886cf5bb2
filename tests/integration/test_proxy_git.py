"""Real `git clone` and `git push` through the gateway (real catalog and policy) to a fake
Azure DevOps serving bare repositories with `git http-backend`."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.azdo import FakeAzdo
from tests.gitclient import git_call, git_env
from tests.harness import RunningGateway, new_key
from tests.processes import communicate

PAT = "upstream-pat-for-git"
REPO = "/fabrikam/Fabrikam-Fiber/_git/fiber"


async def git(*args: str, cwd: Path, home: Path, check: bool = True) -> tuple[int, str]:
    code, text = await git_call(*args, cwd=cwd, env=git_env(home))
    if check:
        assert code == 0, f"git {' '.join(args)} failed:\n{text}"
    return code, text


@pytest.fixture
async def setup(
    make_fake_azdo: Any, make_gateway: Any, tmp_path: Path
) -> tuple[RunningGateway, FakeAzdo, dict[str, str]]:
    (tmp_path / "repos").mkdir()
    fake = await make_fake_azdo(repos=tmp_path / "repos")
    fake.add_repo("fiber", {"README.md": "# Fabrikam Fiber\n", "src/app.py": "print('hi')\n"})
    keys = {name: new_key() for name in ("writer", "reader")}
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": PAT}},
        },
        {
            "clients.yaml": {
                "clients": [
                    {
                        "name": "writer",
                        "credential": "server",
                        "scopes": ["vso.code_write"],
                        "api_keys": [{"id": "w1", "sha256": keys["writer"][1]}],
                    },
                    {
                        "name": "reader",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "api_keys": [{"id": "r1", "sha256": keys["reader"][1]}],
                    },
                ]
            }
        },
    )
    return gw, fake, {name: key for name, (key, _) in keys.items()}


def remote(gw: RunningGateway, key: str) -> str:
    return gw.url.replace("http://", f"http://build:{key}@") + REPO


async def test_clone_through_the_gateway(setup: Any, tmp_path: Path) -> None:
    gw, fake, keys = setup
    await git("clone", "-q", remote(gw, keys["reader"]), "work", cwd=tmp_path, home=tmp_path)
    assert (tmp_path / "work" / "README.md").read_text() == "# Fabrikam Fiber\n"
    assert (tmp_path / "work" / "src" / "app.py").read_text() == "print('hi')\n"
    paths = [(s.method, s.path.removeprefix(REPO)) for s in fake.seen]
    assert ("GET", "/info/refs") in paths and ("POST", "/git-upload-pack") in paths
    for seen in fake.seen:
        assert seen.headers["Authorization"].startswith("Basic ")
        assert keys["reader"] not in str(seen.raw_headers)


@pytest.mark.slow
async def test_push_a_large_pack_through_the_gateway(setup: Any, tmp_path: Path) -> None:
    gw, fake, keys = setup
    await git("clone", "-q", remote(gw, keys["writer"]), "work", cwd=tmp_path, home=tmp_path)
    work = tmp_path / "work"
    blob = os.urandom(8 * 1024 * 1024)  # incompressible: the pack is larger than http.postBuffer
    (work / "data.bin").write_bytes(blob)
    await git("add", "data.bin", cwd=work, home=tmp_path)
    await git("commit", "-q", "-m", "large file", cwd=work, home=tmp_path)
    await git("push", "-q", "origin", "main", cwd=work, home=tmp_path)
    bare = tmp_path / "repos" / "fiber.git"
    _, subject = await git("log", "-1", "--format=%s", "main", cwd=bare, home=tmp_path)
    assert subject.strip() == "large file"
    proc = await asyncio.create_subprocess_exec(
        "git", "cat-file", "blob", "main:data.bin", cwd=bare, stdout=asyncio.subprocess.PIPE
    )
    stored, _ = await communicate(proc, 60)
    assert hashlib.sha256(stored).digest() == hashlib.sha256(blob).digest()
    # git probes with a tiny request first, then streams the pack chunked
    probe, push = [s for s in fake.seen if s.path.endswith("/git-receive-pack")]
    assert probe.headers["Content-Length"] == "4"
    assert push.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in push.headers


async def test_read_only_client_cannot_push(setup: Any, tmp_path: Path) -> None:
    gw, fake, keys = setup
    await git("clone", "-q", remote(gw, keys["reader"]), "work", cwd=tmp_path, home=tmp_path)
    work = tmp_path / "work"
    (work / "change.txt").write_text("nope\n")
    await git("add", "change.txt", cwd=work, home=tmp_path)
    await git("commit", "-q", "-m", "should not land", cwd=work, home=tmp_path)
    code, out = await git("push", "origin", "main", cwd=work, home=tmp_path, check=False)
    assert code != 0
    assert "403" in out
    assert not any("receive-pack" in s.path or "receive-pack" in s.query for s in fake.seen)
    bare = tmp_path / "repos" / "fiber.git"
    _, subject = await git("log", "-1", "--format=%s", "main", cwd=bare, home=tmp_path)
    assert subject.strip() == "initial"
