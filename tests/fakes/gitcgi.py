"""Serve bare git repositories over smart HTTP with `git http-backend` (CGI).

The request body streams into the CGI's stdin and its stdout streams back, so
multi-megabyte packs never sit whole in memory here either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from aiohttp import web

EXEC_PATH = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True)
HTTP_BACKEND = Path(EXEC_PATH.stdout.strip()) / "git-http-backend"


def make_repo(root: Path, name: str, files: dict[str, str]) -> Path:
    """A bare repository `root/name.git` with one commit holding `files`."""
    work = root / f"{name}.work"
    bare = root / f"{name}.git"
    env = {**os.environ, "GIT_AUTHOR_NAME": "Fabrikam", "GIT_AUTHOR_EMAIL": "dev@fabrikam.example",
           "GIT_COMMITTER_NAME": "Fabrikam", "GIT_COMMITTER_EMAIL": "dev@fabrikam.example"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "initial"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)
    subprocess.run(["git", "-C", str(bare), "config", "http.receivepack", "true"], check=True)
    shutil.rmtree(work)
    return bare


async def serve_git(request: web.Request, project_root: Path, path_info: str) -> web.StreamResponse:
    """Run git http-backend for `path_info` (e.g. `/repo.git/info/refs`)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(project_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "REQUEST_METHOD": request.method,
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query_string,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_USER": "fabrikam",
        "REMOTE_ADDR": request.remote or "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
    }
    if request.content_length is not None:
        env["CONTENT_LENGTH"] = str(request.content_length)
    if "Content-Encoding" in request.headers:
        env["HTTP_CONTENT_ENCODING"] = request.headers["Content-Encoding"]
    if "Git-Protocol" in request.headers:
        env["GIT_PROTOCOL"] = request.headers["Git-Protocol"]
    proc = await asyncio.create_subprocess_exec(
        str(HTTP_BACKEND), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def feed() -> None:
        with contextlib.suppress(ConnectionError):
            async for chunk in request.content.iter_any():
                stdin.write(chunk)
                await stdin.drain()
        stdin.close()

    feeder = asyncio.ensure_future(feed())
    try:
        status, headers = 200, []
        while line := (await stdout.readline()).rstrip(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name.strip(), value.strip()))
        response = web.StreamResponse(status=status)
        for name, value in headers:
            response.headers.add(name, value)
        await response.prepare(request)
        while chunk := await stdout.read(65536):
            await response.write(chunk)
        await feeder
        await response.write_eof()
        return response
    finally:
        feeder.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
