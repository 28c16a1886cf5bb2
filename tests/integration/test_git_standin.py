"""The stand-in's git smart HTTP bridge serves real git clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from gateway.demo.git_http import GitError, GitHttp, run_git, seed_repository

pytestmark = pytest.mark.slow


async def _serve(tmp_path: Path) -> tuple[str, web.AppRunner, Path]:
    root = tmp_path / "repos"
    bare = seed_repository(root / "app.git")
    git = GitHttp(root)

    async def handler(request: web.Request) -> web.StreamResponse:
        return await git.serve(
            request, root / (request.match_info["repo"] + ".git"), request.match_info["service"]
        )

    app = web.Application()
    app.router.add_route(
        "*", r"/{repo}/{service:info/refs|git-upload-pack|git-receive-pack}", handler
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return f"http://127.0.0.1:{runner.addresses[0][1]}", runner, bare


async def test_clone_push_and_fetch_protocol_v2(tmp_path: Path) -> None:
    url, runner, bare = await _serve(tmp_path)
    try:
        work = tmp_path / "work"
        await asyncio.to_thread(
            run_git, "-c", "protocol.version=2", "clone", "--quiet", f"{url}/app", str(work)
        )
        assert run_git("log", "--format=%s", cwd=work).split() == [
            "Change",
            "3",
            "Change",
            "2",
            "Change",
            "1",
        ]
        (work / "big.bin").write_bytes(bytes(range(256)) * 8192)  # a 2 MiB pack
        env = {
            "GIT_AUTHOR_NAME": "a",
            "GIT_AUTHOR_EMAIL": "a@x",
            "GIT_COMMITTER_NAME": "a",
            "GIT_COMMITTER_EMAIL": "a@x",
        }
        run_git("add", "big.bin", cwd=work)
        run_git("commit", "--quiet", "-m", "Add big", cwd=work, env=env)
        await asyncio.to_thread(run_git, "push", "--quiet", "origin", "main", cwd=work)
        head = run_git("rev-parse", "HEAD", cwd=work).strip()
        assert run_git("rev-parse", "main", cwd=bare).strip() == head
        shallow = tmp_path / "shallow"
        await asyncio.to_thread(
            run_git, "clone", "--quiet", "--depth", "1", f"{url}/app", str(shallow)
        )
        assert run_git("rev-list", "--count", "HEAD", cwd=shallow).strip() == "1"
        assert (shallow / "big.bin").stat().st_size == 256 * 8192
    finally:
        await runner.cleanup()


async def test_unknown_repository_is_404(tmp_path: Path) -> None:
    url, runner, _ = await _serve(tmp_path)
    try:
        with pytest.raises(GitError, match="not found"):
            await asyncio.to_thread(run_git, "ls-remote", f"{url}/nope")
    finally:
        await runner.cleanup()
