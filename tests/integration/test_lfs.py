"""Git LFS through the gateway, against a stand-in LFS endpoint that pre-authorizes its
actions with the very credential the gateway injected: the client never gets it (actions
pointed at the gateway lose their `Authorization`), an upload batch needs vso.code_write
(the gateway reads the batch body to tell), and real `git lfs push` and clone work."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.azdo_standin import (
    UPSTREAM_PAT,
    RecordingAzdo,
    client,
    gateway_config,
    pat_header,
)
from tests.fakes.lfs import LFS_TYPE, LfsAzdo
from tests.gitclient import git_call, git_env
from tests.harness import new_key
from tests.tools import require

REPO = "/fabrikam/Fabrikam-Fiber/_git/Fabrikam-Fiber"
BATCH = REPO + ".git/info/lfs/objects/batch"
CONTENT = b"large binary asset\n" * 4096
OID = hashlib.sha256(CONTENT).hexdigest()
SECRETS = (UPSTREAM_PAT, pat_header(), pat_header().partition(" ")[2])


@pytest.fixture
async def azdo(tmp_path: Path) -> AsyncIterator[LfsAzdo]:
    standin = await LfsAzdo(tmp_path / "azdo").start()
    yield standin
    await standin.close()


async def _gateway(azdo: LfsAzdo, make_gateway: Any) -> tuple[Any, dict[str, str]]:
    keys, clients = {}, []
    for name, scopes in (("writer", ["vso.code_write"]), ("reader", ["vso.code"])):
        key, digest = new_key()
        keys[name] = key
        clients.append(client(name, digest, scopes))
    gw = await make_gateway(gateway_config(azdo), {"c.yaml": {"clients": clients}})
    return gw, keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth("", key)}


def _batch(operation: str, oid: str = OID, size: int = len(CONTENT)) -> bytes:
    body = {"operation": operation, "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]}
    return json.dumps(body).encode()


async def _post(gw: Any, key: str, body: bytes, **headers: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.url + BATCH,
            data=body,
            headers={**_auth(key), "Content-Type": LFS_TYPE, "Accept": LFS_TYPE, **headers},
        ) as r:
            raw = await r.read()
            return r.status, "\n".join(f"{k}: {v}" for k, v in r.headers.items()), raw


def _no_secret(*texts: str | bytes) -> None:
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode()
        for secret in SECRETS:
            assert secret.encode() not in data


async def test_actions_on_the_gateway_lose_the_credential_upstream_put_in_them(
    azdo: LfsAzdo, make_gateway: Any
) -> None:
    gw, keys = await _gateway(azdo, make_gateway)
    status, headers, raw = await _post(gw, keys["writer"], _batch("upload"))
    assert status == 200, raw
    _no_secret(headers, raw)
    (obj,) = json.loads(raw)["objects"]
    action = obj["actions"]["upload"]
    assert action["href"] == f"{gw.url}{REPO}.git/info/lfs/objects/{OID}"
    assert "Authorization" not in action["header"] and "authenticated" not in obj
    # the follow-up call, authenticated with the client's own key, gets the injected one
    async with aiohttp.ClientSession() as s:
        async with s.put(action["href"], data=CONTENT, headers=_auth(keys["writer"])) as r:
            assert r.status == 200
    assert azdo.objects[OID] == CONTENT
    assert azdo.received[-1].authorization == pat_header()
    status, headers, raw = await _post(gw, keys["reader"], _batch("download"))
    assert status == 200
    _no_secret(headers, raw)
    assert "Authorization" not in json.loads(raw)["objects"][0]["actions"]["download"]["header"]


async def test_an_upload_batch_needs_code_write_and_the_body_goes_upstream_unchanged(
    azdo: LfsAzdo, make_gateway: Any
) -> None:
    gw, keys = await _gateway(azdo, make_gateway)
    status, _, raw = await _post(gw, keys["reader"], _batch("upload"))
    assert status == 403
    body = json.loads(raw)
    assert (body["reason"], body["operation"], body["requiredScopes"]) == (
        "missing_scope",
        "git.Lfs_BatchUpload",
        ["vso.code_write"],
    )
    assert azdo.batches == []  # denied before anything went upstream
    for spelled in ("Upload", " UPLOAD "):
        sent = _batch(spelled)
        status, _, _ = await _post(gw, keys["reader"], sent)
        assert status == 403  # however Azure DevOps would read it, it is an upload
    sent = b'{"operation" : "download",\n "objects": [{"oid": "%s", "size": 1}]}' % OID.encode()
    status, _, _ = await _post(gw, keys["reader"], sent)
    assert status == 200
    assert azdo.batches == [json.loads(sent)]
    assert [r for r in azdo.received if r.path_qs.endswith("/batch")][-1].headers.get(
        "Content-Length"
    ) == str(len(sent))


@pytest.mark.parametrize(
    ("body", "status", "reason", "error"),
    [
        (
            b'{"operation": "download", "pad": "' + b"x" * 70000 + b'"}',
            413,
            "payload_too_large",
            "git.Lfs_Batch: the request body is larger than 64 KiB; "
            "the gateway reads it to authorize it",
        ),
        (b"operation=upload", 400, "bad_request", "git.Lfs_Batch: the request body is not JSON"),
        (b"[]", 400, "bad_request", "git.Lfs_Batch: the request body is not a JSON object"),
        (
            b'{"operation": "download", "operation": "upload"}',
            400,
            "bad_request",
            "git.Lfs_Batch: the request body gives 'operation' more than once",
        ),
        (
            b'{"operation": 1}',
            400,
            "bad_request",
            "git.Lfs_Batch: the request body: 'operation' must be text",
        ),
    ],
)
async def test_a_batch_body_the_gateway_cannot_read_is_refused(
    azdo: LfsAzdo, make_gateway: Any, body: bytes, status: int, reason: str, error: str
) -> None:
    gw, keys = await _gateway(azdo, make_gateway)
    got, _, raw = await _post(gw, keys["writer"], body)
    assert (got, json.loads(raw)["reason"], json.loads(raw)["error"]) == (status, reason, error)
    assert azdo.batches == []


async def test_a_chunked_batch_body_over_the_limit_is_refused(
    azdo: LfsAzdo, make_gateway: Any
) -> None:
    gw, keys = await _gateway(azdo, make_gateway)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"operation": "download", "pad": "'
        for _ in range(10):
            yield b"x" * 8192
        yield b'"}'

    async with aiohttp.ClientSession() as s:
        async with s.post(gw.url + BATCH, data=chunks(), headers=_auth(keys["writer"])) as r:
            assert (r.status, (await r.json())["reason"]) == (413, "payload_too_large")
    assert azdo.batches == []


class EchoAzdo(LfsAzdo):
    """Echoes the credential it was called with under /_apis/echo/ (json, text)."""

    async def intercept(self, host: str, request: web.Request) -> web.StreamResponse | None:
        if "/_apis/echo/" not in request.path:
            return await super().intercept(host, request)
        await RecordingAzdo.intercept(self, host, request)
        auth = request.headers.get("Authorization", "")
        token = auth.partition(" ")[2]
        pat = base64.b64decode(token).decode().partition(":")[2]
        if request.path.endswith("/json"):
            doc = {"auth": auth, "nested": [{"pat": pat}, "keep"], "url": "x", token: 1}
            return web.json_response(doc, headers={"X-Echo": auth, "X-Other": "fine"})
        return web.Response(text=f"token {token} pat {pat}", headers={"WWW-Debug": pat})


async def test_the_injected_credential_never_reaches_the_client(
    tmp_path: Path, make_gateway: Any
) -> None:
    """Whatever upstream echoes, in a header or a JSON or text body it answers with."""
    echo = await EchoAzdo(tmp_path / "azdo").start()
    try:
        key, digest = new_key()
        rule = {
            "name": "echo",
            "allow": True,
            "match": {"path": "/{organization}/_apis/echo/{what}"},
        }
        gw = await make_gateway(
            gateway_config(echo),
            {"c.yaml": {"clients": [client("echoer", digest, ["vso.code"])], "routes": [rule]}},
        )
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url + "/fabrikam/_apis/echo/json", headers=_auth(key)) as r:
                assert r.status == 200, await r.text()
                doc = await r.json()
                assert "X-Echo" not in r.headers and r.headers["X-Other"] == "fine"
                _no_secret("\n".join(f"{k}: {v}" for k, v in r.headers.items()), json.dumps(doc))
                assert doc == {"nested": [{}, "keep"], "url": "x"}
            async with s.get(gw.url + "/fabrikam/_apis/echo/text", headers=_auth(key)) as r:
                text = await r.text()
                assert "WWW-Debug" not in r.headers
                _no_secret(text)
                assert text == "token [removed by azdo-gateway] pat [removed by azdo-gateway]"
        assert [r.authorization for r in echo.received] == [pat_header(), pat_header()]
    finally:
        await echo.close()


# --- real git-lfs ----------------------------------------------------------------------


def _lfs_env(home: Path, key: str) -> dict[str, str]:
    """git and git-lfs with nothing but this environment's configuration: HOME and the
    global config in `home`, the LFS filters and a credential helper for `key` given
    through GIT_CONFIG_* (no `git lfs install` that would write a global config)."""
    home.mkdir(exist_ok=True)
    helper = home / "credential-helper"
    helper.write_text(
        f'#!/bin/sh\ntest "$1" = get && echo username=ci && echo password={key}\nexit 0\n'
    )
    helper.chmod(0o700)
    config = {
        "credential.helper": str(helper),
        "filter.lfs.process": "git-lfs filter-process",
        "filter.lfs.clean": "git-lfs clean -- %f",
        "filter.lfs.smudge": "git-lfs smudge -- %f",
        "filter.lfs.required": "true",
        "lfs.locksverify": "true",
    }
    env = git_env(
        home, GIT_CONFIG_GLOBAL=str(home / ".gitconfig"), GIT_CONFIG_COUNT=str(len(config))
    )
    for i, (k, v) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = k, v
    return env


async def _run(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    code, out = await git_call(*args, env=env, cwd=cwd, timeout=120)
    assert code == 0, f"git {' '.join(args)}: {out}"
    return out


@pytest.mark.slow
async def test_git_lfs_push_and_clone_through_the_gateway(
    tmp_path: Path, azdo: LfsAzdo, make_gateway: Any
) -> None:
    require("git-lfs", "apt-get install git-lfs")
    gw, keys = await _gateway(azdo, make_gateway)
    remote = gw.url + REPO
    writer = _lfs_env(tmp_path / "writer-home", keys["writer"])
    work = tmp_path / "work"
    await _run(writer, "clone", remote, str(work))
    await _run(writer, "lfs", "track", "*.bin", cwd=work)
    (work / "asset.bin").write_bytes(CONTENT)
    await _run(writer, "add", ".gitattributes", "asset.bin", cwd=work)
    await _run(writer, "commit", "-q", "-m", "an LFS asset", cwd=work)
    await _run(writer, "lfs", "push", "origin", "main", cwd=work)
    assert azdo.objects == {OID: CONTENT}
    await _run(writer, "push", "-q", "origin", "main", cwd=work)
    # every LFS call upstream carried the injected credential, never the client's key
    lfs_calls = [r for r in azdo.received if "/info/lfs/" in r.path_qs]
    assert {r.method for r in lfs_calls} >= {"POST", "PUT"}
    assert {r.authorization for r in lfs_calls} == {pat_header()}

    reader = _lfs_env(tmp_path / "reader-home", keys["reader"])
    clone = tmp_path / "clone"
    await _run(reader, "clone", remote, str(clone))
    assert (clone / "asset.bin").read_bytes() == CONTENT  # smudged: fetched through the gateway
    assert any(r.method == "GET" and r.path_qs.endswith(OID) for r in azdo.received)

    # a read key may not upload: git-lfs shows the gateway's reason
    (clone / "other.bin").write_bytes(b"another asset\n" * 100)
    await _run(reader, "add", "other.bin", cwd=clone)
    await _run(reader, "commit", "-q", "-m", "another", cwd=clone)
    reader["GIT_CONFIG_VALUE_5"] = "false"  # lfs.locksverify: go straight to the batch call
    code, out = await git_call("lfs", "push", "origin", "main", env=reader, cwd=clone)
    assert code != 0
    assert "git.Lfs_BatchUpload needs vso.code_write" in out, out
    assert "missing_scope" in out
    assert len(azdo.objects) == 1
