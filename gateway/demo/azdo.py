"""DEMO/TEST STAND-IN for Azure DevOps Services. Never used by `azdo-gateway run`.

Real aiohttp servers on loopback, one per Azure DevOps host (`main` for
dev.azure.com, `vsrm` for releases, `vssps` for identities), serving the
organization of `azdo_data` with Azure DevOps' conventions: case-insensitive
paths, `{"count", "value"}` collections, `x-ms-continuationtoken` paging,
`ActivityId` / `X-TFS-*` / `X-VSS-*` headers, `api-version` required on writes,
error bodies shaped like Azure DevOps' (`typeKey`, `message`), the location
service (`OPTIONS /{org}/_apis` and per area `OPTIONS /{org}/_apis/{area}`,
resourceAreas, connectionData) and git smart HTTP through real `git http-backend`.

Authentication: a request must carry a credential `check_auth` accepts (the
gateway's injected token). Without one it answers 401, or, unless the request
says `X-TFS-FedAuthRedirect: Suppress`, 203 with a sign-in page, as Azure DevOps
does. Tests add request recording in tests/fakes/azdo_standin.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.demo.azdo_data import Organization, Project, seed_organization
from gateway.demo.azdo_locations import api_locations, connection_data, resource_areas
from gateway.demo.git_http import GitHttp

Handler = Callable[[web.Request, str, dict[str, str]], Awaitable[web.StreamResponse]]
JSON_TYPE = "application/json; charset=utf-8; api-version=7.1"
HOSTS = ("main", "vsrm", "vssps")


def azdo_error(status: int, type_key: str, message: str) -> web.Response:
    """An error answer shaped like Azure DevOps' (what its SDKs deserialize)."""
    body = {
        "$id": "1",
        "innerException": None,
        "message": message,
        "typeName": f"Microsoft.TeamFoundation.{type_key}, Microsoft.TeamFoundation",
        "typeKey": type_key,
        "errorCode": 0,
        "eventId": 3000,
    }
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", charset="utf-8"
    )


def _json(body: Any, *, continuation: str | None = None, status: int = 200) -> web.Response:
    headers = {"x-ms-continuationtoken": continuation} if continuation else {}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def _collection(items: list[Any], *, continuation: str | None = None) -> web.Response:
    return _json({"count": len(items), "value": items}, continuation=continuation)


def _page(request: web.Request, items: list[Any], default_top: int = 100) -> web.Response:
    """`$top` + `continuationToken` paging, the token in `x-ms-continuationtoken`."""
    try:
        top = int(request.query.get("$top", default_top))
        start = int(request.query.get("continuationToken", "0") or 0)
    except ValueError:
        return azdo_error(
            400,
            "InvalidArgumentValueException",
            "The value supplied for $top or continuationToken is not valid.",
        )
    page = items[start : start + max(top, 1)]
    more = start + len(page) < len(items)
    return _collection(page, continuation=str(start + len(page)) if more else None)


class AzdoStandIn:
    """The Azure DevOps stand-in. `await start()`, then point `upstream.hosts` at `hosts`."""

    def __init__(
        self,
        root: Path,
        check_auth: Callable[[str], bool],
        *,
        organization: str = "fabrikam",
        with_repositories: bool = True,
    ) -> None:
        self.org: Organization = seed_organization(
            root, organization, with_repositories=with_repositories
        )
        self.check_auth = check_auth
        self.git = GitHttp(root) if with_repositories else None
        self._runners: list[web.AppRunner] = []
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        self._add_routes()

    @property
    def hosts(self) -> dict[str, str]:
        return dict(self.org.hosts)

    async def start(self, host: str = "127.0.0.1") -> AzdoStandIn:
        for name in HOSTS:
            app = web.Application(client_max_size=1024**3)
            app.router.add_route("*", "/{tail:.*}", self._handler(name))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, 0).start()
            self._runners.append(runner)
            self.org.hosts[name] = f"http://{host}:{runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    # --- dispatch ---------------------------------------------------------------

    def route(self, host: str, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        pattern = pattern.replace(r"\{\*tail\}", "(?P<tail>.*)")
        self._routes.append((host, method, re.compile(f"^{pattern}$", re.I), handler))

    def _handler(self, host: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            response = await self._dispatch(host, request)
            if not response.prepared:
                for name in ("ActivityId", "X-TFS-ProcessId", "X-VSS-E2EID"):
                    response.headers.setdefault(name, str(uuid.uuid4()))
            return response

        return handle

    async def _dispatch(self, host: str, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if not auth or not self.check_auth(auth):
            if request.headers.get("X-TFS-FedAuthRedirect", "").lower() == "suppress":
                return web.Response(
                    status=401,
                    text="Access Denied: authentication required",
                    headers={"WWW-Authenticate": 'Bearer, Basic realm=""'},
                )
            return web.Response(
                status=203,
                content_type="text/html",
                text="<html><title>Azure DevOps Services | Sign In</title></html>",
            )
        path = request.path
        for r_host, method, pattern, handler in self._routes:
            if r_host != host or (method != "*" and method != request.method):
                continue
            m = pattern.match(path)
            if m:
                params = {k: v for k, v in m.groupdict().items() if v is not None}
                try:
                    return await handler(request, host, params)
                except _NotFound as err:
                    return err.response
        return azdo_error(
            404,
            "ApiResourceNotFoundException",
            f"API resource location for {request.method} {path} was not found.",
        )

    def _project(self, params: dict[str, str]) -> Project:
        org = params.get("org", "")
        p = self.org.project(params.get("project", "")) if org.lower() == self.org.name else None
        if p is None:
            raise _NotFound(
                "ProjectDoesNotExistWithNameException",
                f"TF200016: The following project does not exist: "
                f"{params.get('project')}. Verify that the name of the project is "
                "correct and that the project exists on the specified Azure DevOps "
                "Server.",
            )
        return p

    # --- routes ---------------------------------------------------------------------

    def _add_routes(self) -> None:
        for host in HOSTS:
            for org in ("/_apis", "/{org}/_apis"):  # with and without the organization
                self.route(host, "OPTIONS", org, self._options)
                self.route(host, "OPTIONS", org + "/", self._options)
                self.route(host, "OPTIONS", org + "/{area}", self._options)
                self.route(host, "OPTIONS", org + "/{area}/", self._options)
            self.route(host, "GET", "/{org}/_apis/resourceAreas", self._resource_areas)
            self.route(host, "GET", "/{org}/_apis/resourceAreas/{area}", self._resource_areas)
            self.route(host, "GET", "/{org}/_apis/connectionData", self._connection_data)
        m = "main"
        self.route(m, "GET", "/{org}/_apis/projects", self._projects)
        self.route(m, "GET", "/{org}/_apis/projects/{project}", self._project_get)
        self.route(m, "GET", "/{org}/_apis/git/repositories", self._org_repos)
        self.route(m, "GET", "/{org}/{project}/_apis/git/repositories", self._repos)
        self.route(m, "GET", "/{org}/{project}/_apis/git/repositories/{repo}", self._repo_get)
        self.route(
            m, "GET", "/{org}/{project}/_apis/git/repositories/{repo}/commits", self._commits
        )
        self.route(m, "GET", "/{org}/{project}/_apis/git/repositories/{repo}/refs", self._refs)
        self.route(m, "GET", "/{org}/{project}/_apis/build/definitions", self._definitions)
        self.route(m, "GET", "/{org}/{project}/_apis/build/builds", self._builds)
        self.route(m, "POST", "/{org}/{project}/_apis/build/builds", self._queue_build)
        self.route(m, "GET", "/{org}/{project}/_apis/build/builds/{build}", self._build_get)
        self.route(m, "GET", "/{org}/{project}/_apis/wit/workItems/{id}", self._work_item)
        self.route(m, "GET", "/{org}/_apis/wit/workItems", self._work_items)
        self.route(m, "*", "/{org}/{project}/_git/{repo}/{*tail}", self._git)
        self.route(m, "*", "/{org}/_git/{repo}/{*tail}", self._git)
        self.route("vsrm", "GET", "/{org}/{project}/_apis/release/releases", self._releases)
        self.route(
            "vsrm", "GET", "/{org}/{project}/_apis/release/releases/{release}", self._release_get
        )
        self.route("vssps", "GET", "/{org}/_apis/graph/users", self._users)

    async def _options(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        # every location of the host, or those of one area (any case; unknown: none)
        return _collection(api_locations(host, p.get("area")))

    async def _resource_areas(
        self, request: web.Request, host: str, p: dict[str, str]
    ) -> web.Response:
        areas = resource_areas(self.org)
        if "area" in p:
            for area in areas:
                if area["id"] == p["area"].lower():
                    return _json(area)
            return azdo_error(
                404, "ResourceAreaNotFoundException", f"Resource area {p['area']} was not found."
            )
        return _collection(areas)

    async def _connection_data(
        self, request: web.Request, host: str, p: dict[str, str]
    ) -> web.Response:
        return _json(connection_data(self.org, host, "Fabrikam Build Bot"))

    async def _projects(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        return _page(request, [self.org.project_json(x) for x in self.org.projects])

    async def _project_get(
        self, request: web.Request, host: str, p: dict[str, str]
    ) -> web.Response:
        return _json(self.org.project_json(self._project(p)))

    async def _org_repos(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        if p["org"].lower() != self.org.name:
            return azdo_error(404, "AccountNotFoundException", f"{p['org']} was not found.")
        return _collection([self.org.repo_json(x, r) for x in self.org.projects for r in x.repos])

    async def _repos(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        return _collection([self.org.repo_json(project, r) for r in project.repos])

    async def _repo_get(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        repo = self.org.repo(project, p["repo"])
        if repo is None:
            return azdo_error(
                404,
                "GitRepositoryNotFoundException",
                f"TF401019: The Git repository with name or identifier "
                f"{p['repo']} does not exist or you do not have permissions for "
                "the operation you are attempting.",
            )
        return _json(self.org.repo_json(project, repo))

    async def _commits(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        repo = self.org.repo(project, p["repo"])
        if repo is None:
            return await self._repo_get(request, host, p)
        q = request.query
        try:
            top = int(q.get("searchCriteria.$top", q.get("$top", "100")))
            skip = int(q.get("searchCriteria.$skip", q.get("$skip", "0")))
        except ValueError:
            return azdo_error(400, "InvalidArgumentValueException", "$top must be a number.")
        branch = q.get("searchCriteria.itemVersion.version")
        return _collection(self.org.commits_json(project, repo, skip=skip, top=top, branch=branch))

    async def _refs(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        repo = self.org.repo(project, p["repo"])
        if repo is None:
            return await self._repo_get(request, host, p)
        return _page(request, self.org.refs_json(project, repo, request.query.get("filter", "")))

    async def _definitions(
        self, request: web.Request, host: str, p: dict[str, str]
    ) -> web.Response:
        project = self._project(p)
        return _collection([self.org.definition_json(project, 1)] if project.repos else [])

    async def _builds(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        builds = [b for b in reversed(self.org.builds) if b.project == project.name]
        return _page(request, [self.org.build_json(b) for b in builds])

    async def _build_get(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        for b in self.org.builds:
            if str(b.id) == p["build"] and b.project == project.name:
                return _json(self.org.build_json(b))
        return azdo_error(404, "BuildNotFoundException", f"Build {p['build']} was not found.")

    async def _queue_build(
        self, request: web.Request, host: str, p: dict[str, str]
    ) -> web.Response:
        project = self._project(p)
        if "api-version" not in request.query and "api-version" not in request.headers.get(
            "Accept", ""
        ):
            return azdo_error(
                400,
                "VssVersionNotSpecifiedException",
                "No api-version was supplied for the POST request. The version "
                "must be supplied either as part of the Accept header (e.g. "
                '"application/json; api-version=1.0") or as a query parameter '
                '(e.g. "?api-version=1.0").',
            )
        try:
            body = await request.json()
            definition = int(body["definition"]["id"])
        except (ValueError, KeyError, TypeError):
            return azdo_error(
                400,
                "InvalidArgumentValueException",
                "Value cannot be null. Parameter name: build.Definition",
            )
        if definition != 1 or not project.repos:
            return azdo_error(
                404,
                "DefinitionNotFoundException",
                f"The requested definition {definition} could not be found.",
            )
        build = self.org.queue_build(project, definition, body.get("sourceBranch"))
        return _json(self.org.build_json(build))

    async def _work_item(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        if p["id"] not in ("1", "2", "3"):
            return azdo_error(
                404,
                "WorkItemUnauthorizedAccessException",
                f"TF401232: Work item {p['id']} does not exist, or you do not "
                "have permissions to read it.",
            )
        return _json(self.org.work_item_json(project, int(p["id"])))

    async def _work_items(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        """`GET /{org}/_apis/wit/workItems?ids=1,2`: work items by id, in any project."""
        if p["org"].lower() != self.org.name:
            return azdo_error(404, "AccountNotFoundException", f"{p['org']} was not found.")
        try:
            ids = [int(x) for x in request.query.get("ids", "").split(",") if x.strip()]
        except ValueError:
            ids = []
        if not ids:
            return azdo_error(
                400, "InvalidArgumentValueException", "The ids parameter must be a list of ids."
            )
        missing = [i for i in ids if i not in (1, 2, 3)]
        if missing:
            return azdo_error(
                404,
                "WorkItemUnauthorizedAccessException",
                f"TF401232: Work item {missing[0]} does not exist, or you do not "
                "have permissions to read it.",
            )
        project = self.org.projects[0]
        return _collection([self.org.work_item_json(project, i) for i in ids])

    async def _releases(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        project = self._project(p)
        count = 3 if project.repos else 0
        return _page(request, [self.org.release_json(project, i) for i in range(count, 0, -1)])

    async def _release_get(
        self, request: web.Request, host: str, p: dict[str, str]
    ) -> web.Response:
        project = self._project(p)
        if p["release"] not in ("1", "2", "3") or not project.repos:
            return azdo_error(
                404,
                "ReleaseNotFoundException",
                f"VS402863: Release with id {p['release']} does not exist.",
            )
        return _json(self.org.release_json(project, int(p["release"])))

    async def _users(self, request: web.Request, host: str, p: dict[str, str]) -> web.Response:
        # Graph pages with `continuationToken`; the stand-in's pages are small to show it.
        users = [self.org.graph_user(n) for n in ("Fabrikam Dev", "Fabrikam Build Bot", "Ana Ops")]
        return _page(request, users, default_top=2)

    async def _git(self, request: web.Request, host: str, p: dict[str, str]) -> web.StreamResponse:
        project = self._project({**p, "project": p.get("project", p["repo"])})
        repo = self.org.repo(project, p["repo"])
        if repo is None:
            return await self._repo_get(request, host, {**p, "project": project.name})
        if self.git is None:
            return azdo_error(404, "GitRepositoryNotFoundException", "No repositories here.")
        return await self.git.serve(request, repo.path, p["tail"])


class _NotFound(Exception):
    def __init__(self, type_key: str, message: str) -> None:
        super().__init__(message)
        self.response = azdo_error(404, type_key, message)
