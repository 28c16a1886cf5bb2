"""A stand-in for Azure Artifacts (pkgs.dev.azure.com): PyPI, npm, NuGet v3 and Maven feeds.

It answers the protocol endpoints as Azure Artifacts lays them out under
`/{organization}[/{project}]/_packaging/{feed}/...`, accepts only the upstream
credential the gateway injects (anything else gets 401 and is recorded as a request
that went around the gateway), and records every request.

PyPI simple pages come as PEP 503 HTML by default and as PEP 691 JSON when the
client's Accept asks for it. Their links are written in three forms: the newest
wheel absolute on the feed's own host (as Azure Artifacts writes them), the sdist
root-relative, and an older wheel relative to the page.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from dataclasses import dataclass, field

from aiohttp import web

from tests.fakes.azdo_standin import pat_header

PYPI_JSON = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    accept: str
    from_gateway: bool


@dataclass
class Feeds:
    """`files` maps a path inside any feed (`pypi/{project}/{version}/{file}`,
    `npm/{name}/{name}-{version}.tgz`, `nuget/{id}/{version}/{file}`, `maven/{path}`) to
    its bytes. `url` is the stand-in's own origin, set once it listens. `pep691`: answer
    simple pages in JSON when asked (else always HTML, as older feeds do)."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    pep691: bool = True
    received: list[Seen] = field(default_factory=list)
    uploads: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, bytes)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        expected = pat_header()
        got = request.headers.get("Authorization", "")
        ok = hmac.compare_digest(got.encode(), expected.encode())
        self.received.append(
            Seen(request.method, request.path, request.headers.get("Accept", ""), ok)
        )
        if not ok:
            return web.json_response({"message": "sign in"}, status=401)
        parts = request.path.strip("/").split("/")
        if "_packaging" not in parts:
            return web.json_response({"message": "not a feed"}, status=404)
        at = parts.index("_packaging")
        feed_root = "/" + "/".join(parts[: at + 2])  # /{org}[/{project}]/_packaging/{feed}
        rest = parts[at + 2 :]
        if request.method in ("PUT", "POST"):
            body = await request.read()
            self.uploads.append((request.method, request.path, len(body)))
            return web.json_response({"ok": True}, status=201 if request.method == "PUT" else 200)
        kind = rest[0] if rest else ""
        if kind == "pypi":
            return self.pypi(request, feed_root, rest[1:])
        if kind == "npm":
            return self.npm(feed_root, rest[1:])
        if kind == "nuget":
            return self.nuget(feed_root, rest[1:])
        if kind == "maven":
            return self.file("maven/" + "/".join(rest[2:]))
        return web.json_response({"message": "unknown protocol"}, status=404)

    def file(self, name: str) -> web.StreamResponse:
        body = self.files.get(name)
        if body is None:
            return web.json_response({"message": f"no {name}"}, status=404)
        return web.Response(body=body, content_type="application/octet-stream")

    # --- PyPI ------------------------------------------------------------------

    def _dists(self, project: str) -> list[tuple[str, str, str]]:
        """(version, file name, sha256) of every file of `project`, oldest first."""
        out = []
        prefix = f"pypi/{project}/"
        for name, body in sorted(self.files.items()):
            if name.startswith(prefix):
                version, filename = name[len(prefix) :].split("/", 1)
                out.append((version, filename, hashlib.sha256(body).hexdigest()))
        return out

    def pypi(self, request: web.Request, root: str, rest: list[str]) -> web.StreamResponse:
        if rest[:1] == ["download"]:
            return self.file("pypi/" + "/".join(rest[1:]))
        if rest[:1] != ["simple"] or len(rest) != 2:
            return web.json_response({"message": "not found"}, status=404)
        project = rest[1]
        dists = self._dists(project)
        if not dists:
            return web.json_response({"message": "no such package"}, status=404)
        links = []
        newest = dists[-1][0]
        for i, (version, filename, digest) in enumerate(dists):
            download = f"download/{project}/{version}/{filename}"
            if filename.endswith(".tar.gz"):
                href = f"{root}/pypi/{download}"  # root-relative
            elif version == newest:
                href = f"{self.url}{root}/pypi/{download}"  # absolute on the feed's host
            else:
                href = f"../../{download}"  # relative to /simple/{project}/
            links.append((filename, f"{href}#sha256={digest}", digest, i))
        if self.pep691 and PYPI_JSON in request.headers.get("Accept", ""):
            doc = {
                "meta": {"api-version": "1.0"},
                "name": project,
                "files": [
                    {"filename": f, "url": h.split("#")[0], "hashes": {"sha256": d}}
                    for f, h, d, _ in links
                ],
            }
            return web.Response(body=json.dumps(doc), content_type=PYPI_JSON)
        anchors = "\n".join(
            f'    <a href="{html.escape(h)}" data-requires-python="&gt;=3.8">'
            f"{html.escape(f)}</a><br/>"
            for f, h, _, _ in links
        )
        page = (
            "<!DOCTYPE html>\n<html>\n  <head><title>Links for "
            f"{project}</title></head>\n  <body>\n    <h1>Links for {project}</h1>\n"
            f"{anchors}\n  </body>\n</html>\n"
        )
        return web.Response(text=page, content_type="text/html")

    # --- npm -------------------------------------------------------------------

    def npm(self, root: str, rest: list[str]) -> web.StreamResponse:
        if rest[:1] != ["registry"] or len(rest) < 2:
            return web.json_response({"message": "not found"}, status=404)
        name = rest[1]
        if len(rest) == 4 and rest[2] == "-":
            return self.file(f"npm/{name}/{rest[3]}")
        versions = {}
        for file, body in sorted(self.files.items()):
            if file.startswith(f"npm/{name}/"):
                tgz = file.rsplit("/", 1)[1]
                version = tgz.removeprefix(name + "-").removesuffix(".tgz")
                versions[version] = {
                    "name": name,
                    "version": version,
                    "dist": {
                        "tarball": f"{self.url}{root}/npm/registry/{name}/-/{tgz}",
                        "shasum": hashlib.sha1(body).hexdigest(),  # noqa: S324 - npm's own field
                    },
                }
        if not versions:
            return web.json_response({"error": "not_found"}, status=404)
        latest = sorted(versions)[-1]
        return web.json_response(
            {"name": name, "dist-tags": {"latest": latest}, "versions": versions}
        )

    # --- NuGet v3 --------------------------------------------------------------

    def nuget(self, root: str, rest: list[str]) -> web.StreamResponse:
        base = f"{self.url}{root}/nuget/v3"
        if rest == ["v3", "index.json"]:
            return web.json_response(
                {
                    "version": "3.0.0",
                    "resources": [
                        {"@id": f"{base}/flat2/", "@type": "PackageBaseAddress/3.0.0"},
                        {"@id": f"{base}/registrations2/", "@type": "RegistrationsBaseUrl"},
                        {"@id": f"{self.url}{root}/nuget/v2/", "@type": "PackagePublish/2.0.0"},
                    ],
                }
            )
        if rest[:2] == ["v3", "flat2"]:
            return self.file("nuget/" + "/".join(rest[2:]))
        return web.json_response({"message": "not found"}, status=404)
