"""The ready-to-paste examples `azdo-gateway demo` prints, and a check that runs them.

Each example is data (method, URL, credential, body, the status it should get),
rendered as a `curl` line for people and run with aiohttp by `demo --check`, so
the printed lines and what is checked cannot drift apart. `check` also runs the
printed git clone and SDK lines, and reports every example as ok or FAILED.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shlex
import shutil
import sys
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
    bearer: str | None = None  # an Entra ID access token sent as a Bearer token

    def curl(self) -> str:
        parts = ["curl", "-sS"]
        if self.key is not None:
            parts += ["-u", f":{self.key}"]
        if self.method != "GET":
            parts += ["-X", self.method]
        if self.body is not None:
            parts += ["-H", "Content-Type: application/json", "-d", self.body]
        parts.append(self.url)
        line = shlex.join(parts)
        if self.bearer is not None:
            # A JWT is base64url and dots: safe inside double quotes, as people write it.
            line = line.replace("curl -sS", f'curl -sS -H "Authorization: Bearer {self.bearer}"', 1)
        return line

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if self.body else {}
        if self.key is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth("", self.key)
        if self.bearer is not None:
            headers["Authorization"] = f"Bearer {self.bearer}"
        return headers


@dataclass(frozen=True, slots=True)
class Result:
    """One example as `demo --check` ran it."""

    title: str
    ok: bool | None  # None: skipped (what it needs is not installed)
    detail: str = ""


def examples(
    gw: str, admin: str, reader_key: str, bot_key: str, user_token: str, *, git: bool
) -> list[Example]:
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
            "An Entra ID user (on-behalf-of): the user's own token in, that user's"
            " Azure DevOps token upstream",
            "GET",
            f"{gw}/fabrikam/_apis/projects?{API}",
            None,
            200,
            look_for="Fabrikam-Fiber",
            bearer=user_token,
        ),
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


def sdk_python() -> str | None:
    """This interpreter when it has the azure-devops SDK, else None."""
    try:
        found = importlib.util.find_spec("azure.devops") is not None
    except (ImportError, ValueError):
        found = False
    return sys.executable if found else None


def sdk_line(gw: str, key: str, python: str) -> str:
    code = (
        "from azure.devops.connection import Connection; "
        "from msrest.authentication import BasicAuthentication; "
        f'c = Connection("{gw}/fabrikam", BasicAuthentication("", "{key}")); '
        'print([r.name for r in c.clients.get_git_client().get_repositories("Fabrikam-Fiber")])'
    )
    return shlex.join([python, "-c", code])


async def check(
    examples: list[Example], gw: str, bot_key: str, reader_key: str, *, git: bool
) -> list[Result]:
    """Run every example, the git clone and the SDK line; one Result each."""
    results = []
    async with aiohttp.ClientSession() as session:
        for ex in examples:
            try:
                async with session.request(
                    ex.method, ex.url, data=ex.body, headers=ex.headers()
                ) as r:
                    text = await r.text()
            except aiohttp.ClientError as err:
                results.append(Result(ex.title, False, str(err)))
                continue
            if r.status != ex.expect or ex.look_for not in text:
                detail = f"got {r.status}, expected {ex.expect} with {ex.look_for!r}: {text[:300]}"
                results.append(Result(ex.title, False, detail))
            else:
                results.append(Result(ex.title, True))
    if git and shutil.which("git"):
        results.append(await _check_clone(gw, bot_key))
    results.append(await _check_sdk(gw, reader_key, git=git))
    return results


async def _check_clone(gw: str, bot_key: str) -> Result:
    title = "git clone with the build bot's key"
    with tempfile.TemporaryDirectory(prefix="azdo-gateway-demo-clone-") as tmp:
        argv = shlex.split(git_clone_line(gw, bot_key))[1:]
        try:
            await run_git_async(*argv[:-1], "--quiet", argv[-1], str(Path(tmp) / "clone"))
        except GitError as err:
            return Result(title, False, str(err).replace(bot_key, "***"))
    return Result(title, True)


async def _check_sdk(gw: str, key: str, *, git: bool) -> Result:
    title = "the azure-devops Python SDK lists the repositories"
    python = sdk_python()
    if python is None:
        return Result(
            title, None, "skipped: azure-devops is not installed (pip install azure-devops)"
        )
    argv = shlex.split(sdk_line(gw, key, python))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Result(title, False, "no answer within 120 s")
    text = out.decode(errors="replace").replace(key, "***")
    expected = "Fabrikam-Fiber" if git else "[]"  # without git the stand-in has no repositories
    if proc.returncode != 0 or expected not in text:
        return Result(title, False, f"exit status {proc.returncode}: {text[-300:]}")
    return Result(title, True)
