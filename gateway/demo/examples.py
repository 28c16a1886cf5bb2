"""The ready-to-paste examples `azdo-gateway demo` prints, and a check that runs them.

Each example is data (method, URL, key, body, the status it should get), rendered
as a `curl` line for people and run with aiohttp by `demo --check`, so the
printed lines and what is checked cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.demo.git_http import GitError, run_git_async

API = "api-version=7.1"
PROJECT = "fabrikam/Fabrikam-Fiber"


@dataclass(frozen=True, slots=True)
class Example:
    title: str
    method: str
    url: str
    key: str | None  # gateway key sent as the Basic password; None: no credential
    expect: int  # the status the gateway answers
    body: str | None = None
    look_for: str = ""  # a text the answer contains

    def curl(self) -> str:
        parts = ["curl", "-sS"]
        if self.key is not None:
            parts += ["-u", f":{self.key}"]
        if self.method != "GET":
            parts += ["-X", self.method]
        if self.body is not None:
            parts += ["-H", "Content-Type: application/json", "-d", self.body]
        parts.append(self.url)
        return shlex.join(parts)


def examples(gw: str, admin: str, reader_key: str, bot_key: str, *, git: bool) -> list[Example]:
    """The printed examples. Without git the stand-in has no repositories, and so no build
    definitions or releases either: the examples that need them are left out."""
    queue = json.dumps({"definition": {"id": 1}}, separators=(",", ":"))
    out = [
        Example(
            "Allowed: the read-only key lists projects",
            "GET",
            f"{gw}/fabrikam/_apis/projects?{API}",
            reader_key,
            200,
            look_for="Fabrikam-Fiber",
        ),
        Example(
            "Denied: the read-only key may not queue a build (403, with the reason)",
            "POST",
            f"{gw}/{PROJECT}/_apis/build/builds?{API}",
            reader_key,
            403,
            body=queue,
            look_for="missing_scope",
        ),
    ]
    if git:
        out += [
            Example(
                "Allowed: the build bot queues that build",
                "POST",
                f"{gw}/{PROJECT}/_apis/build/builds?{API}",
                bot_key,
                200,
                body=queue,
                look_for="notStarted",
            ),
            Example(
                "Releases live on another host (vsrm), reached under /_hosts/vsrm/",
                "GET",
                f"{gw}/_hosts/vsrm/{PROJECT}/_apis/release/releases?{API}",
                reader_key,
                200,
                look_for="/_hosts/vsrm/fabrikam/",
            ),
            Example(
                "The repository list: remoteUrl points at the gateway",
                "GET",
                f"{gw}/{PROJECT}/_apis/git/repositories?{API}",
                reader_key,
                200,
                look_for=f"://fabrikam@{gw.split('://')[1]}/fabrikam/",
            ),
        ]
    out += [
        Example(
            "No key: 401 from the gateway, nothing reaches Azure DevOps",
            "GET",
            f"{gw}/fabrikam/_apis/projects?{API}",
            None,
            401,
            look_for="azdo-gateway",
        ),
        Example(
            "Metrics (Prometheus, admin port)",
            "GET",
            f"{admin}/metrics",
            None,
            200,
            look_for="azdo_gateway_requests_total",
        ),
    ]
    return out


def git_clone_line(gw: str, key: str) -> str:
    scheme, _, rest = gw.partition("://")
    return shlex.join(
        ["git", "clone", f"{scheme}://build-bot:{key}@{rest}/{PROJECT}/_git/Fabrikam-Fiber"]
    )


def sdk_line(gw: str, key: str) -> str:
    code = (
        "from azure.devops.connection import Connection; "
        "from msrest.authentication import BasicAuthentication; "
        f'c = Connection("{gw}/fabrikam", BasicAuthentication("", "{key}")); '
        'print([r.name for r in c.clients.get_git_client().get_repositories("Fabrikam-Fiber")])'
    )
    return shlex.join(["python3", "-c", code])


async def check(examples: list[Example], gw: str, bot_key: str, *, git: bool) -> list[str]:
    """Run every example (and a git clone); return one line per failure."""
    failures = []
    async with aiohttp.ClientSession() as session:
        for ex in examples:
            headers = {"Content-Type": "application/json"} if ex.body else {}
            if ex.key is not None:
                headers["Authorization"] = aiohttp.encode_basic_auth("", ex.key)
            try:
                async with session.request(ex.method, ex.url, data=ex.body, headers=headers) as r:
                    text = await r.text()
            except aiohttp.ClientError as err:
                failures.append(f"{ex.title}: {err}")
                continue
            if r.status != ex.expect or ex.look_for not in text:
                failures.append(
                    f"{ex.title}: got {r.status}, expected {ex.expect} with "
                    f"{ex.look_for!r}: {text[:300]}"
                )
    if git and shutil.which("git"):
        with tempfile.TemporaryDirectory(prefix="azdo-gateway-demo-clone-") as tmp:
            argv = shlex.split(git_clone_line(gw, bot_key))[1:]
            try:
                await run_git_async(*argv[:-1], "--quiet", argv[-1], str(Path(tmp) / "clone"))
            except GitError as err:
                failures.append(f"git clone: {str(err).replace(bot_key, '***')}")
    return failures
