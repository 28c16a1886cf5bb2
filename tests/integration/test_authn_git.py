"""Real git against the gateway with a gateway key: in the URL, and from a credential helper."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

import pytest

from gateway.authn.api_key import key_sha256, new_key
from tests.gitclient import git_env

pytestmark = pytest.mark.slow

UPSTREAM_PAT = "upstream-pat-for-azure-devops-server"


def git(*args: str, cwd: Path | None = None, home: Path) -> subprocess.CompletedProcess[str]:
    env = git_env(home, GIT_ASKPASS="")
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


async def start(tmp_path, make_fake_azdo, make_gateway):
    repos = tmp_path / "repos"
    repos.mkdir()
    fake = await make_fake_azdo(repos=repos)
    fake.add_repo("app", {"README.md": "hello from the fake\n"})
    key = new_key()
    gw = await make_gateway(
        {
            "upstream": {"hosts": {"main": fake.url}},
            "credentials": {"server": {"type": "pat", "pat": UPSTREAM_PAT}},
        },
        {
            "ci.yaml": {
                "clients": [
                    {
                        "name": "ci",
                        "credential": "server",
                        "scopes": ["vso.code"],
                        "api_keys": [{"id": "ci-git", "sha256": key_sha256(key)}],
                    }
                ]
            }
        },
    )
    home = tmp_path / "home"
    home.mkdir()
    return fake, gw, key, home


def assert_key_stayed_at_the_gateway(fake, key: str) -> None:
    assert fake.seen, "nothing reached upstream"
    expected = "Basic " + base64.b64encode(f":{UPSTREAM_PAT}".encode()).decode()
    for seen in fake.seen:
        assert key not in repr(seen.headers)
        assert seen.headers.get("Authorization") == expected


async def test_git_clone_with_the_key_in_the_url(tmp_path, make_fake_azdo, make_gateway):
    fake, gw, key, home = await start(tmp_path, make_fake_azdo, make_gateway)
    host = gw.url.removeprefix("http://")
    url = f"http://build:{key}@{host}/fabrikam/Fabrikam-Fiber/_git/app"
    done = await asyncio.to_thread(git, "clone", "--quiet", url, str(tmp_path / "w"), home=home)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w" / "README.md").read_text() == "hello from the fake\n"
    assert key not in done.stderr
    assert_key_stayed_at_the_gateway(fake, key)


async def test_git_clone_through_a_credential_helper(tmp_path, make_fake_azdo, make_gateway):
    fake, gw, key, home = await start(tmp_path, make_fake_azdo, make_gateway)
    helper = f'!f() {{ test "$1" = get && echo username=ci && echo password={key}; }}; f'
    url = f"{gw.url}/fabrikam/Fabrikam-Fiber/_git/app"
    done = await asyncio.to_thread(
        git,
        "-c",
        f"credential.helper={helper}",
        "clone",
        "--quiet",
        url,
        str(tmp_path / "w"),
        home=home,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w" / "README.md").exists()
    fetched = await asyncio.to_thread(
        git, "-c", f"credential.helper={helper}", "fetch", "--quiet", cwd=tmp_path / "w", home=home
    )
    assert fetched.returncode == 0, fetched.stderr
    assert_key_stayed_at_the_gateway(fake, key)


async def test_git_with_a_wrong_key_or_a_pat_is_told_why(tmp_path, make_fake_azdo, make_gateway):
    fake, gw, _, home = await start(tmp_path, make_fake_azdo, make_gateway)
    host = gw.url.removeprefix("http://")
    for secret in (new_key(), "a" * 52):  # an unknown key, then something shaped like a PAT
        url = f"http://build:{secret}@{host}/fabrikam/Fabrikam-Fiber/_git/app"
        done = await asyncio.to_thread(git, "clone", "--quiet", url, str(tmp_path / "w"), home=home)
        assert done.returncode != 0
        assert "Authentication failed" in done.stderr or "401" in done.stderr, done.stderr
    assert fake.seen == []
