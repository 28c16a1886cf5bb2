"""A Git LFS endpoint in the Azure DevOps stand-in that pre-authorizes its actions.

Serves the LFS API (https://github.com/git-lfs/git-lfs/blob/main/docs/api) under every
repository of the recording stand-in, next to its `git http-backend` bridge:
`POST .../_git/{repo}[.git]/info/lfs/objects/batch`, `PUT`/`GET .../objects/{oid}`,
`POST .../locks/verify`. Like some LFS servers, its batch answer puts an `Authorization`
header in every action (here: the very credential the batch call came with, so that a
gateway relaying it would hand its own upstream credential to the client) and says
`"authenticated": true`. Objects are kept in memory and checked against their oid.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.azdo_standin import RecordingAzdo

LFS_TYPE = "application/vnd.git-lfs+json"
_LFS = re.compile(r"^(?P<repo>/.+/_git/[^/]+?)(?:\.git)?/info/lfs/(?P<rest>.+)$", re.I)
_OBJECT = re.compile(r"^objects/(?P<oid>[0-9a-f]{64})$")


def _lfs_json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(body).encode(), content_type=LFS_TYPE)


class LfsAzdo(RecordingAzdo):
    """The recording stand-in with a pre-authorizing Git LFS endpoint."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.objects: dict[str, bytes] = {}
        self.batches: list[dict[str, Any]] = []  # the batch requests as received

    async def intercept(self, host: str, request: web.Request) -> web.StreamResponse | None:
        await super().intercept(host, request)
        m = _LFS.match(request.path)
        if host != "main" or m is None:
            return None
        auth = request.headers.get("Authorization", "")
        if not self.check_auth(auth):
            return _lfs_json({"message": "Access denied"}, 401)
        base = self.hosts["main"] + m["repo"] + ".git/info/lfs"
        rest = m["rest"]
        if rest == "objects/batch" and request.method == "POST":
            return await self._batch(request, base, auth)
        if rest == "locks/verify" and request.method == "POST":
            return _lfs_json({"ours": [], "theirs": [], "next_cursor": ""})
        obj = _OBJECT.match(rest)
        if obj and request.method == "PUT":
            data = await request.read()
            if hashlib.sha256(data).hexdigest() != obj["oid"]:
                return _lfs_json({"message": "oid does not match the content"}, 422)
            self.objects[obj["oid"]] = data
            return web.Response(status=200)
        if obj and request.method == "GET":
            found = self.objects.get(obj["oid"])
            if found is None:
                return _lfs_json({"message": "Object does not exist"}, 404)
            return web.Response(body=found, content_type="application/octet-stream")
        return _lfs_json({"message": f"not an LFS endpoint: {request.method} {rest}"}, 404)

    async def _batch(self, request: web.Request, base: str, auth: str) -> web.Response:
        doc = json.loads(await request.read())
        self.batches.append(doc)
        upload = doc.get("operation") == "upload"
        answers = []
        for item in doc.get("objects", []):
            oid, size = item["oid"], item["size"]
            action = {"href": f"{base}/objects/{oid}", "header": {"Authorization": auth}}
            if upload:
                actions = {} if oid in self.objects else {"upload": action}
            elif oid in self.objects:
                actions = {"download": action}
            else:
                answers.append({"oid": oid, "size": size, "error": {"code": 404, "message": "no"}})
                continue
            answers.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        return _lfs_json({"transfer": "basic", "objects": answers, "hash_algo": "sha256"})
