"""The stand-in's git smart HTTP bridge serves real git clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
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


def _scripted_backend(tmp_path: Path, script: str) -> tuple[GitHttp, Path]:
    """A GitHttp whose `git` is a shell script, and the (empty) repository it serves."""
    repo = tmp_path / "repos" / "app.git"
    repo.mkdir(parents=True)
    (repo / "HEAD").write_text("ref: refs/heads/main\n")
    backend = tmp_path / "git"
    backend.write_text("#!/bin/sh\n" + script)
    backend.chmod(0o700)
    git = GitHttp(repo.parent)
    git.git = str(backend)
    return git, repo


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refs_handler(
    git: GitHttp,
    repo: Path,
    handling: asyncio.Future[asyncio.Task[object]],
    at_end: Callable[[], None],
) -> Handler:
    """A handler serving info/refs through `git` that hands its task to `handling`
    and calls `at_end` however it ends."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if handling.done():  # a client's retry on the closed connection
            raise web.HTTPServiceUnavailable()
        task = asyncio.current_task()
        assert task is not None
        handling.set_result(task)
        try:
            return await git.serve(request, repo, "info/refs")
        finally:
            at_end()

    return handler


@contextlib.asynccontextmanager
async def _serving_refs(handler: Handler) -> AsyncIterator[str]:
    """Serve `handler` at /app/info/refs on a free port; yield that URL."""
    app = web.Application()
    app.router.add_get("/app/info/refs", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/app/info/refs"
    finally:
        await runner.cleanup()


def _alive(pid: int) -> bool:
    """Whether `pid` is still a process (running, or exited and not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_cancelled_answer_still_reaps_git_http_backend(tmp_path: Path) -> None:
    """The caller closing its connection right after the last byte cancels the handler
    while git http-backend is still exiting: the handler ends only once it is reaped."""
    go, pidfile = tmp_path / "go", tmp_path / "pid"
    os.mkfifo(go)
    git, repo = _scripted_backend(
        tmp_path,
        f"echo $$ > '{pidfile}'\n"
        "printf 'Content-Type: text/plain\\r\\n\\r\\nanswered'\n"
        "exec >&- 2>&-\n"  # the whole answer is out; exit only when the test says so
        f"read line < '{go}'\n",
    )
    loop = asyncio.get_running_loop()
    handling: asyncio.Future[asyncio.Task[object]] = loop.create_future()
    alive_at_end: asyncio.Future[bool] = loop.create_future()

    handler = _refs_handler(
        git, repo, handling, lambda: alive_at_end.set_result(_alive(int(pidfile.read_text())))
    )
    async with _serving_refs(handler) as url:
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert await r.text() == "answered"
        (await handling).cancel()
        await asyncio.sleep(0)  # one turn of the loop: the handler takes the cancellation
        assert not alive_at_end.done()  # and is still waiting for the process
        await asyncio.to_thread(go.write_text, "exit\n")
        assert await asyncio.wait_for(alive_at_end, 30) is False


def _running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie left to init does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _ends(pid: int, deadline_s: float = 10.0) -> bool:
    """Whether `pid`, already sent SIGKILL, stops running within the deadline: a killed
    process leaves the run queue only once the kernel has scheduled it to die, which on a
    busy machine is not the instant the signal was sent."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while _running(pid):
        if loop.time() > until:
            return False
        await asyncio.sleep(0.01)  # polls another process's state in /proc
    return True


@pytest.mark.parametrize("cancelled", ["answering", "starting"])
async def test_a_cancelled_answer_kills_what_git_http_backend_started(
    tmp_path: Path, cancelled: str
) -> None:
    """git http-backend runs git receive-pack, which holds the same pipes: a handler
    cancelled mid-answer (the client went away), or while the process is still being
    started, ends once both are gone."""
    pidfile, childfile = tmp_path / "pid", tmp_path / "child"
    git, repo = _scripted_backend(
        tmp_path,
        f"echo $$ > '{pidfile}.tmp' && mv '{pidfile}.tmp' '{pidfile}'\n"
        "sleep 600 &\n"  # a child holding the pipes, answering nothing
        f"echo $! > '{childfile}.tmp' && mv '{childfile}.tmp' '{childfile}'\n"
        "wait\n",
    )
    loop = asyncio.get_running_loop()
    handling: asyncio.Future[asyncio.Task[object]] = loop.create_future()
    ended: asyncio.Future[None] = loop.create_future()

    handler = _refs_handler(git, repo, handling, lambda: ended.set_result(None))
    async with _serving_refs(handler) as url:
        async with aiohttp.ClientSession() as s:
            call = asyncio.ensure_future(s.get(url))
            task = await asyncio.wait_for(handling, 30)
            # "starting": the handler's first pause is in starting the process
            while cancelled == "answering" and not childfile.exists():
                await asyncio.sleep(0.01)  # polls the script's progress
            task.cancel()
            await asyncio.wait_for(ended, 30)
            # whichever the script got to start: the backend reaped, its child gone
            if pidfile.exists():
                assert not _alive(int(pidfile.read_text()))
            if childfile.exists():
                assert await _ends(int(childfile.read_text()))
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await call
