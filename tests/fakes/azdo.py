"""A fake Azure DevOps for tests: records every request it receives and echoes it.

Every request is recorded (method, raw path, query, headers, SHA-256 and length
of the body) before it is answered. Special paths, all under `/_fake/`, inject
behaviour; anything else is echoed as JSON, except git smart HTTP paths
(`/{org}/{project}/_git/{repo}/...`), which a real `git http-backend` serves
(through the demo's bridge) from bare repositories made with `fake.add_repo()`.

    /_fake/bytes/{n}[?chunked=1]   n deterministic bytes, streamed (Content-Length unless chunked)
    /_fake/status/{code}           that status with a JSON body and Azure DevOps' throttling headers
    /_fake/headers                 Azure DevOps' own headers plus ones a proxy must drop
    /_fake/hold                    answers only once the test calls `fake.release()`
                                   (so does any path in `fake.hold_paths`)
    /_fake/sleep/{seconds}         answers after that long (for load, not for synchronisation)
    /_fake/stall                   never answers
    /_fake/stall-body              sends headers and half the body, then stalls
    /_fake/cut-body[?chunked=1]    sends headers and half the body, then drops the connection
    /_fake/garbage                 answers with bytes that are not HTTP
    /_fake/json[?pad=N&chunked=1]  JSON with absolute URLs on this host (for the rewriter)

`reject` holds Authorization values answered with 401 (or, with `reject_status=203`,
the sign-in page Azure DevOps serves to browsers).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.demo.git_http import GitHttp, run_git

GIT_PATH = re.compile(r"^/[^/]+/(?:[^/]+/)?_git/([^/]+)(/.*)$")
PATTERN = bytes(range(256)) * 256  # 64 KiB of a recognisable pattern
AUTHOR = {
    "GIT_AUTHOR_NAME": "Fabrikam",
    "GIT_AUTHOR_EMAIL": "dev@fabrikam.example",
    "GIT_COMMITTER_NAME": "Fabrikam",
    "GIT_COMMITTER_EMAIL": "dev@fabrikam.example",
}


def make_repo(root: Path, name: str, files: dict[str, str]) -> Path:
    """A bare repository `root/name.git` with one commit ("initial") holding `files`."""
    work, bare = root / f"{name}.work", root / f"{name}.git"
    run_git("init", "-q", "-b", "main", str(work))
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    run_git("add", "-A", cwd=work, env=AUTHOR)
    run_git("commit", "-q", "-m", "initial", cwd=work, env=AUTHOR)
    run_git("clone", "-q", "--bare", str(work), str(bare))
    shutil.rmtree(work)
    return bare


def pattern_bytes(n: int) -> bytes:
    """The first `n` bytes `/_fake/bytes/{n}` serves (for small n)."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_sha256: str
    body_len: int
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FakeAzdo:
    url: str
    runner: web.AppRunner
    repos: Path | None = None
    seen: list[Seen] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)
    reject_status: int = 401
    held: asyncio.Event = field(default_factory=asyncio.Event)
    holding: int = 0
    hold_paths: set[str] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0  # handlers that were cancelled because the caller went away
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self._release.set()

    def add_repo(self, name: str, files: dict[str, str]) -> Path:
        assert self.repos is not None, "start_fake_azdo(repos=tmp_path) to serve git"
        return make_repo(self.repos, name, files)

    async def close(self) -> None:
        self.release()
        await self.runner.cleanup()


async def _record(fake: FakeAzdo, request: web.Request, *, body: bool = True) -> Seen:
    digest, n = hashlib.sha256(), 0
    if body:
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            n += len(chunk)
    seen = Seen(
        request.method,
        request.raw_path.partition("?")[0],
        request.raw_path.partition("?")[2],
        dict(request.headers),
        digest.hexdigest(),
        n,
        [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
    )
    fake.seen.append(seen)
    return seen


async def _stream(
    request: web.Request,
    n: int,
    chunked: bool,
    stop_at: int | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if not chunked:
        response.content_length = n
    await response.prepare(request)
    sent = 0
    while sent < n:
        chunk = PATTERN[: min(len(PATTERN), n - sent)]
        if stop_at is not None and sent + len(chunk) > stop_at:
            return response
        await response.write(chunk)
        sent += len(chunk)
    await response.write_eof()
    return response


async def start_fake_azdo(
    *, repos: Path | None = None, tls: ssl.SSLContext | None = None, **_: Any
) -> FakeAzdo:
    fake: FakeAzdo

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        if request.headers.get("Authorization") in fake.reject:
            await _record(fake, request)
            if fake.reject_status == 203:
                return web.Response(
                    status=203, text="<html>Sign in</html>", content_type="text/html"
                )
            return web.json_response(
                {"message": "TF400813: not authorized"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        git = GIT_PATH.match(path)
        if git and fake.repos is not None:
            await _record(fake, request, body=False)
            return await GitHttp(fake.repos).serve(
                request, fake.repos / f"{git[1]}.git", git[2].lstrip("/")
            )
        try:
            return await _special(fake, request, path)
        except asyncio.CancelledError:
            fake.cancelled += 1
            raise
        finally:
            fake.finished.set()

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    port = runner.addresses[0][1]
    scheme = "https" if tls else "http"
    fake = FakeAzdo(url=f"{scheme}://127.0.0.1:{port}", runner=runner, repos=repos)
    return fake


async def _special(fake: FakeAzdo, request: web.Request, path: str) -> web.StreamResponse:
    if m := re.fullmatch(r"/_fake/bytes/(\d+)", path):
        await _record(fake, request)
        return await _stream(request, int(m[1]), chunked="chunked" in request.query)
    if m := re.fullmatch(r"/_fake/status/(\d+)", path):
        await _record(fake, request)
        return web.json_response(
            {"message": f"fake status {m[1]}", "typeKey": "FakeException"},
            status=int(m[1]),
            headers={
                "Location": (fake.url if "here" in request.query else "https://elsewhere.example")
                + "/fabrikam/moved",
                "Retry-After": "7",
                "X-RateLimit-Limit": "200",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Resource": "core",
                "X-RateLimit-Delay": "1.5",
            },
        )
    if path == "/_fake/headers":
        await _record(fake, request)
        return web.json_response(
            {"value": []},
            headers={
                "ActivityId": "5e2a1c7e-0000-4000-8000-000000000001",
                "X-TFS-Session": "5e2a1c7e-0000-4000-8000-000000000002",
                "X-VSS-E2EID": "5e2a1c7e-0000-4000-8000-000000000003",
                "X-VSS-UserData": "00000000-0000-0000-0000-000000000000:build-sp",
                "x-ms-continuationtoken": "next-page-token",
                "Retry-After": "3",
                "X-RateLimit-Remaining": "10",
                "Set-Cookie": "VstsSession=upstream-session; Path=/; Secure; HttpOnly",
                "Alt-Svc": 'h3=":443"',
                "Connection": "X-Private",
                "X-Private": "secret-hop",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "X-Request-ID": "upstream-id",
            },
        )
    if path == "/_fake/hold" or path in fake.hold_paths:
        await _record(fake, request)
        fake.holding += 1
        fake.held.set()
        await fake._release.wait()
        return web.json_response({"held": True})
    if m := re.fullmatch(r"/_fake/sleep/([\d.]+)", path):
        await _record(fake, request, body=False)
        await asyncio.sleep(float(m[1]))
        return web.Response(text="slept")
    if path == "/_fake/stall":
        await _record(fake, request)
        await asyncio.Event().wait()
    if path in ("/_fake/stall-body", "/_fake/cut-body"):
        await _record(fake, request)
        response = await _stream(
            request, 1 << 20, chunked="chunked" in request.query, stop_at=1 << 19
        )
        if path == "/_fake/stall-body":
            await asyncio.Event().wait()
        assert request.transport is not None
        request.transport.close()
        return response
    if path == "/_fake/garbage":
        await _record(fake, request)
        assert request.transport is not None
        request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nhello")
        request.transport.close()
        return web.Response()
    if path == "/_fake/json":
        await _record(fake, request)
        doc = {
            "url": fake.url + "/fabrikam/_apis/git/repositories/1",
            "_links": {"self": {"href": fake.url + "/fabrikam/_apis/projects/2"}},
            "pad": "x" * int(request.query.get("pad", "0")),
        }
        data = json.dumps(doc).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
        if "chunked" not in request.query:
            response.content_length = len(data)
        await response.prepare(request)
        for i in range(0, len(data), 1000):
            await response.write(data[i : i + 1000])
        await response.write_eof()
        return response
    seen = await _record(fake, request)
    return web.json_response(
        {
            "method": seen.method,
            "path": seen.path,
            "query": seen.query,
            "authorization": request.headers.get("Authorization"),
            "bodySha256": seen.body_sha256,
            "bodyLength": seen.body_len,
        }
    )
