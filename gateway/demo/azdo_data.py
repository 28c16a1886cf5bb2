"""Stand-in only: the organization the Azure DevOps stand-in serves, as JSON.

An organization `fabrikam` with projects, real git repositories (commits and refs
are read from them with git), build definitions and builds, releases (served on
the `vsrm` host) and work items. Every body carries absolute URLs on the host
that owns the resource (`url`, `_links.*.href`, `remoteUrl`, `webUrl`), as Azure
DevOps does, so the gateway's rewriting is exercised by everything that reads it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.demo.git_http import run_git, seed_repository

_NS = uuid.UUID("6d1b0e8e-6f3c-4f4e-9a59-7b1f4f6b2a10")
Json = dict[str, Any]


def stable_id(*parts: str) -> str:
    """A deterministic GUID, so ids are the same on every run."""
    return str(uuid.uuid5(_NS, "/".join(parts)))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Repo:
    name: str
    path: Path  # the bare repository on disk
    id: str = ""


@dataclass
class Project:
    name: str
    description: str
    repos: list[Repo] = field(default_factory=list)
    id: str = ""


@dataclass
class Build:
    id: int
    definition_id: int
    project: str
    status: str
    result: str | None
    source_branch: str
    source_version: str
    queue_time: str
    requested_for: str = "Fabrikam Build Bot"


@dataclass
class Organization:
    """What the stand-in serves; `hosts` maps host names to their base URLs."""

    name: str
    root: Path
    projects: list[Project]
    hosts: dict[str, str] = field(default_factory=dict)
    builds: list[Build] = field(default_factory=list)

    # --- lookups -------------------------------------------------------------

    def project(self, key: str) -> Project | None:
        for p in self.projects:
            if key.lower() in (p.name.lower(), p.id):
                return p
        return None

    def repo(self, project: Project, key: str) -> Repo | None:
        for r in project.repos:
            if key.lower() in (r.name.lower(), r.id):
                return r
        return None

    def url(self, host: str, path: str) -> str:
        return f"{self.hosts[host]}/{self.name}{path}"

    # --- JSON ------------------------------------------------------------------

    def project_json(self, p: Project) -> Json:
        return {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "url": self.url("main", f"/_apis/projects/{p.id}"),
            "state": "wellFormed",
            "revision": 11,
            "visibility": "private",
            "lastUpdateTime": "2026-01-03T10:00:00Z",
            "_links": {
                "self": {"href": self.url("main", f"/_apis/projects/{p.id}")},
                "collection": {
                    "href": self.url("main", "/_apis/projectCollections/" + stable_id(self.name))
                },
                "web": {"href": self.url("main", f"/{p.name}")},
            },
        }

    def repo_json(self, p: Project, r: Repo) -> Json:
        base = f"/{p.id}/_apis/git/repositories/{r.id}"
        main = self.hosts["main"]
        scheme, _, rest = main.partition("://")
        return {
            "id": r.id,
            "name": r.name,
            "url": self.url("main", base),
            "project": {k: v for k, v in self.project_json(p).items() if k != "_links"},
            "defaultBranch": "refs/heads/main",
            "size": sum(f.stat().st_size for f in r.path.rglob("*") if f.is_file()),
            "remoteUrl": f"{scheme}://{self.name}@{rest}/{self.name}/{p.name}/_git/{r.name}",
            "sshUrl": f"git@ssh.dev.azure.com:v3/{self.name}/{p.name}/{r.name}",
            "webUrl": self.url("main", f"/{p.name}/_git/{r.name}"),
            "isDisabled": False,
            "isInMaintenance": False,
            "_links": {
                "self": {"href": self.url("main", base)},
                "project": {"href": self.url("main", f"/_apis/projects/{p.id}")},
                "web": {"href": self.url("main", f"/{p.name}/_git/{r.name}")},
                "commits": {"href": self.url("main", base + "/commits")},
                "refs": {"href": self.url("main", base + "/refs")},
                "items": {"href": self.url("main", base + "/items")},
            },
        }

    def commits_json(
        self, p: Project, r: Repo, *, skip: int, top: int, branch: str | None
    ) -> list[Json]:
        fmt = "%H%x1f%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%s%x1e"
        rev = f"refs/heads/{branch}" if branch else "HEAD"
        try:
            out = run_git(
                "log", f"--format={fmt}", f"--skip={skip}", f"--max-count={top}", rev, cwd=r.path
            )
        except RuntimeError:
            return []
        commits = []
        for rec in filter(None, (x.strip("\n") for x in out.split("\x1e"))):
            sha, an, ae, ad, cn, ce, cd, subject = rec.split("\x1f")
            url = self.url("main", f"/{p.id}/_apis/git/repositories/{r.id}/commits/{sha}")
            commits.append(
                {
                    "commitId": sha,
                    "comment": subject,
                    "author": {"name": an, "email": ae, "date": ad},
                    "committer": {"name": cn, "email": ce, "date": cd},
                    "url": url,
                    "remoteUrl": self.url("main", f"/{p.name}/_git/{r.name}/commit/{sha}"),
                    "_links": {
                        "self": {"href": url},
                        "repository": {
                            "href": self.url("main", f"/{p.id}/_apis/git/repositories/{r.id}")
                        },
                        "web": {"href": self.url("main", f"/{p.name}/_git/{r.name}/commit/{sha}")},
                    },
                }
            )
        return commits

    def refs_json(self, p: Project, r: Repo, prefix: str) -> list[Json]:
        out = run_git("for-each-ref", "--format=%(objectname) %(refname)", cwd=r.path)
        refs = []
        for line in out.splitlines():
            sha, name = line.split(" ", 1)
            if not name.startswith("refs/" + prefix):
                continue
            refs.append(
                {
                    "name": name,
                    "objectId": sha,
                    "creator": self.identity("Fabrikam Dev"),
                    "url": self.url(
                        "main",
                        f"/{p.id}/_apis/git/repositories/{r.id}/refs"
                        f"?filter={name.removeprefix('refs/')}",
                    ),
                }
            )
        return refs

    def identity(self, name: str) -> Json:
        ident = stable_id("identity", name)
        return {
            "displayName": name,
            "id": ident,
            "uniqueName": f"{name.replace(' ', '.')}@fabrikam",
            "url": f"{self.hosts.get('vssps', self.hosts['main'])}/{self.name}/_apis/Identities/"
            f"{ident}",
            "imageUrl": self.url("main", f"/_apis/GraphProfile/MemberAvatars/aad.{ident}"),
            "_links": {
                "avatar": {
                    "href": self.url("main", f"/_apis/GraphProfile/MemberAvatars/aad.{ident}")
                }
            },
        }

    def graph_user(self, name: str) -> Json:
        ident = stable_id("identity", name)
        descriptor = f"aad.{ident}"
        user_url = f"{self.hosts['vssps']}/{self.name}/_apis/Graph/Users/{descriptor}"
        avatar = self.url("main", f"/_apis/GraphProfile/MemberAvatars/{descriptor}")
        return {
            "subjectKind": "user",
            "displayName": name,
            "descriptor": descriptor,
            "principalName": f"{name.replace(' ', '.').lower()}@fabrikam.example",
            "mailAddress": f"{name.replace(' ', '.').lower()}@fabrikam.example",
            "origin": "aad",
            "originId": ident,
            "domain": stable_id("tenant"),
            "url": user_url,
            "_links": {
                "self": {"href": user_url},
                "memberships": {
                    "href": f"{self.hosts['vssps']}/{self.name}/_apis/Graph/"
                    f"Memberships/{descriptor}"
                },
                "avatar": {"href": avatar},
            },
        }

    def definition_json(self, p: Project, def_id: int) -> Json:
        repo = p.repos[0] if p.repos else None
        url = self.url("main", f"/{p.id}/_apis/build/Definitions/{def_id}?revision=4")
        return {
            "id": def_id,
            "name": f"{p.name}-CI",
            "path": "\\",
            "type": "build",
            "queueStatus": "enabled",
            "revision": 4,
            "url": url,
            "uri": f"vstfs:///Build/Definition/{def_id}",
            "project": {k: v for k, v in self.project_json(p).items() if k != "_links"},
            "repository": (
                {
                    "id": repo.id,
                    "name": repo.name,
                    "type": "TfsGit",
                    "url": self.url("main", f"/{p.name}/_git/{repo.name}"),
                }
                if repo
                else None
            ),
            "_links": {
                "self": {"href": url},
                "web": {
                    "href": self.url("main", f"/{p.id}/_build/definition?definitionId={def_id}")
                },
            },
        }

    def build_json(self, b: Build) -> Json:
        p = self.project(b.project)
        assert p is not None
        url = self.url("main", f"/{p.id}/_apis/build/Builds/{b.id}")
        return {
            "id": b.id,
            "buildNumber": f"2026.{b.id}",
            "status": b.status,
            "result": b.result,
            "queueTime": b.queue_time,
            "sourceBranch": b.source_branch,
            "sourceVersion": b.source_version,
            "priority": "normal",
            "reason": "manual",
            "url": url,
            "uri": f"vstfs:///Build/Build/{b.id}",
            "definition": {
                k: v
                for k, v in self.definition_json(p, b.definition_id).items()
                if k in ("id", "name", "path", "type", "url", "revision", "project")
            },
            "project": {k: v for k, v in self.project_json(p).items() if k != "_links"},
            "requestedFor": self.identity(b.requested_for),
            "logs": {"id": 0, "type": "Container", "url": url + "/logs"},
            "repository": {"id": p.repos[0].id if p.repos else None, "type": "TfsGit"},
            "_links": {
                "self": {"href": url},
                "web": {"href": self.url("main", f"/{p.id}/_build/results?buildId={b.id}")},
                "timeline": {"href": url + "/Timeline"},
                "badge": {
                    "href": self.url("main", f"/{p.id}/_apis/build/status/{b.definition_id}")
                },
            },
        }

    def queue_build(self, p: Project, definition_id: int, branch: str | None) -> Build:
        repo = p.repos[0] if p.repos else None
        sha = run_git("rev-parse", "HEAD", cwd=repo.path).strip() if repo else ""
        build = Build(
            id=max((b.id for b in self.builds), default=0) + 1,
            definition_id=definition_id,
            project=p.name,
            status="notStarted",
            result=None,
            source_branch=branch or "refs/heads/main",
            source_version=sha,
            queue_time=_now(),
        )
        self.builds.append(build)
        return build

    def release_json(self, p: Project, rel_id: int) -> Json:
        url = self.url("vsrm", f"/{p.id}/_apis/Release/releases/{rel_id}")
        return {
            "id": rel_id,
            "name": f"Release-{rel_id}",
            "status": "active",
            "createdOn": f"2026-01-{rel_id:02d}T12:00:00Z",
            "reason": "continuousIntegration",
            "url": url,
            "releaseDefinition": {
                "id": 1,
                "name": f"{p.name} release",
                "url": self.url("vsrm", f"/{p.id}/_apis/Release/definitions/1"),
                "_links": {
                    "self": {"href": self.url("vsrm", f"/{p.id}/_apis/Release/definitions/1")},
                    "web": {"href": self.url("main", f"/{p.id}/_release?definitionId=1")},
                },
            },
            "projectReference": {"id": p.id, "name": p.name},
            "createdBy": self.identity("Fabrikam Dev"),
            "artifacts": [
                {
                    "alias": "_CI",
                    "type": "Build",
                    "definitionReference": {
                        "artifactSourceDefinitionUrl": {
                            "id": self.url(
                                "main",
                                f"/_permalink/_build/index?collectionId={stable_id(self.name)}"
                                f"&projectId={p.id}&definitionId=1",
                            ),
                            "name": "",
                        }
                    },
                }
            ],
            "_links": {
                "self": {"href": url},
                "web": {"href": self.url("main", f"/{p.id}/_release?releaseId={rel_id}")},
            },
        }

    def work_item_json(self, p: Project, wid: int) -> Json:
        url = self.url("main", f"/{p.id}/_apis/wit/workItems/{wid}")
        titles = {1: "Checkout fails for guest users", 2: "Add dark mode", 3: "Upgrade runtime"}
        return {
            "id": wid,
            "rev": 3,
            "url": url,
            "fields": {
                "System.AreaPath": p.name,
                "System.TeamProject": p.name,
                "System.IterationPath": f"{p.name}\\Sprint 12",
                "System.WorkItemType": "Bug" if wid == 1 else "User Story",
                "System.State": "Active",
                "System.Reason": "Approved",
                "System.AssignedTo": self.identity("Fabrikam Dev"),
                "System.CreatedDate": "2026-01-02T09:00:00Z",
                "System.Title": titles.get(wid, f"Work item {wid}"),
                "System.Description": f"Reported at {self.url('main', f'/{p.name}')}",
            },
            "_links": {
                "self": {"href": url},
                "workItemUpdates": {"href": url + "/updates"},
                "workItemRevisions": {"href": url + "/revisions"},
                "workItemType": {"href": self.url("main", f"/{p.id}/_apis/wit/workItemTypes/Bug")},
                "fields": {"href": self.url("main", f"/{p.id}/_apis/wit/fields")},
                "html": {"href": self.url("main", f"/{p.id}/_workitems/edit/{wid}")},
            },
        }


def seed_organization(
    root: Path, name: str = "fabrikam", *, with_repositories: bool = True
) -> Organization:
    """The demo organization, with its git repositories created under `root`."""
    specs = [
        ("Fabrikam-Fiber", "Fiber web shop", ["Fabrikam-Fiber", "fiber-docs"]),
        ("Contoso-Ops", "Operations scripts", ["ops-scripts"]),
        ("Tailspin", "Toys (archived)", []),
    ]
    projects = []
    for pname, desc, repos in specs:
        p = Project(pname, desc, id=stable_id(name, pname))
        for rname in repos if with_repositories else []:
            path = seed_repository(root / name / pname / f"{rname}.git")
            p.repos.append(Repo(rname, path, id=stable_id(name, pname, rname)))
        projects.append(p)
    org = Organization(name, root, projects)
    fiber = projects[0]
    head = run_git("rev-parse", "HEAD", cwd=fiber.repos[0].path).strip() if fiber.repos else ""
    for bid, result in ((1, "succeeded"), (2, "failed")):
        org.builds.append(
            Build(
                bid,
                1,
                fiber.name,
                "completed",
                result,
                "refs/heads/main",
                head,
                f"2026-01-0{bid}T11:00:00Z",
            )
        )
    return org
