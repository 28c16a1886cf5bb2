"""Stand-in only: serve real git repositories over smart HTTP through `git http-backend`.

Part of the Azure DevOps stand-in that `azdo-gateway demo` and the tests run; never
used by `azdo-gateway run`. `GitHttp.serve()` bridges one aiohttp request to the
`git http-backend` CGI program, streaming the request body into it and its output
back to the client (packs are never held in memory), so that real `git clone`,
`fetch` and `push` (protocol v0 and v2, gzip-encoded requests) work against it.
`seed_repository()` creates a bare repository with a little history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess  # noqa: S404 - runs git with fixed arguments, never a shell
import tempfile
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from gateway.tasks import spawn

log = logging.getLogger("azdo_gateway.demo.git")
T = TypeVar("T")

GIT_SERVICES = ("info/refs", "git-upload-pack", "git-receive-pack")
_CHUNK = 64 * 1024
_ISOLATED = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "HOME": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def git_executable() -> str:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is not installed (needed for the stand-in's repositories)")
    return git


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_ISOLATED)
    env.update(extra or {})
    return env


class GitHttp:
    """The smart HTTP endpoint of bare repositories below `root`."""

    def __init__(self, root: Path, *, receive_pack: bool = True) -> None:
        self.root = root
        self.receive_pack = receive_pack
        self.git = git_executable()

    async def serve(self, request: web.Request, repo_dir: Path, service: str) -> web.StreamResponse:
        """Answer `service` ("info/refs", "git-upload-pack" or "git-receive-pack") for
        the bare repository `repo_dir` (which must be below `root`)."""
        repo_dir = self._checked(repo_dir)
        if service not in GIT_SERVICES:
            raise web.HTTPNotFound(text="not a git smart HTTP endpoint\n")
        env = _git_env(
            {
                "GIT_PROJECT_ROOT": str(repo_dir.parent),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": f"/{repo_dir.name}/{service}",
                "REQUEST_METHOD": request.method,
                "QUERY_STRING": request.query_string,
                "CONTENT_TYPE": request.headers.get("Content-Type", ""),
                "REMOTE_USER": "demo",
                "REMOTE_ADDR": request.remote or "127.0.0.1",
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.receivepack",
                "GIT_CONFIG_VALUE_0": "true" if self.receive_pack else "false",
            }
        )
        for header, var in (
            ("Content-Length", "CONTENT_LENGTH"),
            ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
            ("Git-Protocol", "HTTP_GIT_PROTOCOL"),
        ):
            if header in request.headers:
                env[var] = request.headers[header]
        starting = spawn(
            asyncio.create_subprocess_exec(
                self.git,
                "http-backend",
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # see _kill()
            ),
            name="git-http-start",
        )
        try:
            proc = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Cancelled while the process was being started (its pipes connecting):
            # it starts all the same, so stop it and wait for it before passing the
            # cancellation on. (Cancelling the start itself would wait for the process
            # to exit, which what it started may delay for good.)
            await _to_the_end(_stop(starting))
            raise
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        pump = spawn(self._pump(request, proc.stdin), name="git-http-stdin")
        errors = spawn(proc.stderr.read(), name="git-http-stderr")
        try:
            status, reason, headers = await self._cgi_headers(proc.stdout)
            response = web.StreamResponse(status=status, reason=reason, headers=headers)
            await response.prepare(request)
            while chunk := await proc.stdout.read(_CHUNK):
                await response.write(chunk)
            await response.write_eof()
            return response
        except BaseException:
            _kill(proc)  # only when something went wrong (the client went away)
            raise
        finally:
            # To the end even when the handler is cancelled meanwhile (the caller closing
            # its connection right after the last byte): a process not waited for
            # outlives the event loop, its transport unclosed.
            stderr = await _to_the_end(self._reap(proc, pump, errors))
            if stderr.strip():
                log.info("git http-backend: %s", stderr.decode(errors="replace").strip())

    @staticmethod
    async def _reap(
        proc: asyncio.subprocess.Process, pump: asyncio.Task[None], errors: asyncio.Task[bytes]
    ) -> bytes:
        """Wait for the process to exit and its pipes to close; return its standard error."""
        await proc.wait()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
            await pump
        return await errors

    def _checked(self, repo_dir: Path) -> Path:
        repo_dir = repo_dir.resolve()
        if not repo_dir.is_relative_to(self.root.resolve()) or not (repo_dir / "HEAD").is_file():
            raise web.HTTPNotFound(text="repository not found\n")
        return repo_dir

    @staticmethod
    async def _pump(request: web.Request, stdin: asyncio.StreamWriter) -> None:
        try:
            async for chunk in request.content.iter_chunked(_CHUNK):
                stdin.write(chunk)
                await stdin.drain()
        finally:
            stdin.close()

    @staticmethod
    async def _cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
        status, reason = 200, "OK"
        headers: dict[str, str] = {}
        while True:
            raw = await stdout.readline()
            if not raw:
                raise web.HTTPInternalServerError(text="git http-backend gave no answer\n")
            line = raw.decode("latin-1").rstrip("\r\n")
            if not line:
                return status, reason, headers
            name, _, value = line.partition(":")
            if name.lower() == "status":
                code, _, reason = value.strip().partition(" ")
                status = int(code)
            else:
                headers[name.strip()] = value.strip()


def run_git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run git with no user or system configuration; return its standard output."""
    done = subprocess.run(  # noqa: S603 - fixed executable, arguments from this module
        [git_executable(), *args],
        cwd=cwd,
        env=_git_env(env),
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise GitError(f"git {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


async def run_git_async(*args: str, cwd: Path | None = None) -> str:
    """`run_git` for code running on an event loop (which must keep serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        git_executable(),
        *args,
        cwd=cwd,
        env=_git_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # see _kill()
    )
    try:
        out, err = await proc.communicate()
    except BaseException:  # cancelled: the clone is abandoned
        _kill(proc)
        await _to_the_end(proc.wait())
        raise
    if proc.returncode != 0:
        raise GitError(f"git {args[0]} failed ({proc.returncode}): {err.decode().strip()}")
    return out.decode()


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL `proc` (started in a session of its own) and every process it started:
    the git program `git http-backend` runs holds the same pipes, and waiting for `proc`
    waits for them to close. `os.killpg`, unlike `Process.kill()`, never reaps an exited
    child behind the event loop's child watcher (which would then report it as unknown)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _stop(starting: asyncio.Task[asyncio.subprocess.Process]) -> None:
    """Once `starting` has started its process, kill it (and what it started) and reap it."""
    try:
        proc = await starting
    except OSError:
        return  # it never started
    _kill(proc)
    await proc.wait()


async def _to_the_end(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` to its end even if the caller is cancelled meanwhile; then pass the
    cancellation on."""
    task = spawn(coro, name="git-http-reap")
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})  # unlike awaiting it, never cancels the task
        except asyncio.CancelledError as err:
            interrupted = err
    if interrupted is not None:
        raise interrupted
    return task.result()


class GitError(RuntimeError):
    """A git command failed; the message carries its standard error."""


_AUTHOR = {
    "GIT_AUTHOR_NAME": "Fabrikam Dev",
    "GIT_AUTHOR_EMAIL": "dev@fabrikam.example",
    "GIT_COMMITTER_NAME": "Fabrikam Dev",
    "GIT_COMMITTER_EMAIL": "dev@fabrikam.example",
}


def seed_repository(bare: Path, *, commits: int = 3) -> Path:
    """Create the bare repository `bare` with `commits` commits on main and a tag."""
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    with tempfile.TemporaryDirectory(prefix="azdo-seed-") as tmp:
        work = Path(tmp)
        run_git("init", "--quiet", "--initial-branch=main", str(work))
        for n in range(1, commits + 1):
            date = f"2026-01-{n:02d}T10:00:00+00:00"
            env = {**_AUTHOR, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
            (work / "README.md").write_text(f"# Fabrikam Fiber\n\nrevision {n}\n")
            (work / "src").mkdir(exist_ok=True)
            (work / "src" / f"module{n}.py").write_text(f"VALUE = {n}\n")
            run_git("add", "-A", cwd=work, env=env)
            run_git("commit", "--quiet", "-m", f"Change {n}", cwd=work, env=env)
        run_git("tag", "v1.0", cwd=work, env=_AUTHOR)
        run_git("push", "--quiet", str(bare), "main", "v1.0", cwd=work)
    return bare
