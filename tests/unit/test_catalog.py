from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.catalog import Catalog
from gateway.catalog import build as catalog_build
from gateway.catalog.load import CatalogError, data_dir, operations_from
from gateway.catalog.trie import TemplateError, parse_template
from gateway.errors import BadRequest
from gateway.types import Operation

SPECS = Path("/work/shared/data/vsts-rest-api-specs")
SCOPES_TSV = Path("/work/shared/data/azure-devops-scopes.tsv")
REPO = Path(__file__).resolve().parents[2]
needs_specs = pytest.mark.skipif(not SPECS.is_dir(), reason="specification checkout not present")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.builtin()


def test_builtin_is_loaded_once_and_covers_the_specs(catalog: Catalog) -> None:
    assert Catalog.builtin() is catalog
    generated = [op for op in catalog if not op.note and not op.omits]  # full templates
    assert len({(op.host, op.method, op.template.lower()) for op in generated}) == 1086
    assert {op.host for op in generated} == {
        "main",
        "vssps",
        "vsrm",
        "feeds",
        "pkgs",
        "vsaex",
        "vstmr",
        "advsec",
        "artifacts",
        "auditservice",
        "almsearch",
        "extmgmt",
        "status",
        "app",
        "*",
    }
    assert sum(1 for op in generated if not op.scopes) == 27
    assert sum(1 for op in generated if len(op.scopes) > 1) == 69
    assert len(catalog) == len(catalog.operations)


def test_source_commit_is_recorded(catalog: Catalog) -> None:
    assert re.match(r"^[0-9a-f]{40}\b", catalog.source)
    if (SPECS / "SOURCE.txt").is_file():
        assert catalog.source.split()[0] in (SPECS / "SOURCE.txt").read_text()


def test_operation_ids_are_bounded_labels(catalog: Catalog) -> None:
    for op in catalog:
        assert re.fullmatch(r"[A-Za-z]+\.[A-Za-z0-9_]+", op.id), op.id
        assert op.area == op.id.split(".")[0]
    generated = [op for op in catalog if not op.note and not op.omits]
    assert len({op.id for op in generated}) == len(generated)  # forms share their id


# host, method, request path, operation id, scopes: spot checks against the specifications
SPOT_CHECKS = [
    (
        "main",
        "GET",
        "/fabrikam/Fiber/_apis/git/repositories",
        "git.Repositories_List",
        ("vso.code",),
    ),
    (
        "main",
        "POST",
        "/fabrikam/Fiber/_apis/git/repositories/r1/pushes",
        "git.Pushes_Create",
        ("vso.code_write",),
    ),
    (
        "main",
        "DELETE",
        "/fabrikam/Fiber/_apis/git/repositories/r1",
        "git.Repositories_Delete",
        ("vso.code_manage",),
    ),
    (
        "main",
        "GET",
        "/fabrikam/Fiber/_apis/git/repositories/r1/commits",
        "git.Commits_GetPushCommits",
        ("vso.code",),
    ),
    (
        "main",
        "PUT",
        "/fabrikam/Fiber/_apis/build/definitions/12/tags/nightly",
        "build.Tags_AddDefinitionTag",
        ("vso.build_execute",),
    ),
    ("main", "GET", "/fabrikam/Fiber/_apis/build/status/ci", "build.Status_Get", ()),
    (
        "main",
        "GET",
        "/fabrikam/_apis/projects",
        "core.Projects_List",
        ("vso.profile", "vso.project"),
    ),
    (
        "main",
        "PATCH",
        "/fabrikam/Fiber/_apis/wit/workitems/42",
        "wit.WorkItems_Update",
        ("vso.work_write",),
    ),
    (
        "main",
        "GET",
        "/fabrikam/Fiber/_apis/wit/workitems/$Task",
        "wit.WorkItems_GetWorkItemTemplate",
        ("vso.work",),
    ),
    ("main", "GET", "/fabrikam/Fiber/_apis/pipelines", "pipelines.Pipelines_List", ("vso.build",)),
    (
        "vsrm",
        "PATCH",
        "/fabrikam/Fiber/_apis/Release/releases/7/manualinterventions/3",
        "release.ManualInterventions_Update",
        ("vso.release_execute",),
    ),
    (
        "vsrm",
        "GET",
        "/fabrikam/Fiber/_apis/Release/definitions/5/revisions",
        "release.Definitions_GetReleaseDefinitionHistory",
        ("vso.release",),
    ),
    ("vssps", "POST", "/fabrikam/_apis/tokens/pats", "tokens.Pats_Create", ("vso.pats_manage",)),
    ("vssps", "GET", "/fabrikam/_apis/graph/groups", "graph.Groups_List", ("vso.graph",)),
    (
        "vstmr",
        "POST",
        "/fabrikam/Fiber/_apis/testresults/testfailuretype",
        "testResults.Testfailuretype_Create",
        ("vso.test_write",),
    ),
    (
        "vstmr",
        "DELETE",
        "/fabrikam/Fiber/_apis/testresults/testfailuretype/9",
        "testResults.Testfailuretype_Delete",
        ("vso.test_write",),
    ),
    (
        "advsec",
        "GET",
        "/fabrikam/Fiber/_apis/alert/repositories/r1/alerts",
        "advancedSecurity.Alerts_List",
        ("vso.advsec",),
    ),
    (
        "advsec",
        "DELETE",
        "/fabrikam/Fiber/_apis/alert/repositories/r1/pipelineAnalyses",
        "advancedSecurity.PipelineAnalyses_Delete",
        ("vso.advsec_manage",),
    ),
    (
        "almsearch",
        "POST",
        "/fabrikam/_apis/search/packagesearchresults",
        "search.PackageSearchResults_FetchPackageSearchResults",
        ("vso.packaging",),
    ),
    (
        "almsearch",
        "POST",
        "/fabrikam/Fiber/_apis/search/workitemsearchresults",
        "search.WorkItemSearchResults_FetchWorkItemSearchResults",
        ("vso.work",),
    ),
    ("app", "GET", "/_apis/accounts", "account.Accounts_List", ("vso.profile",)),
    ("app", "GET", "/_apis/profile/profiles/me", "profile.Profiles_Get", ("vso.profile",)),
    (
        "artifacts",
        "PATCH",
        "/fabrikam/_apis/symbol/requests/abc",
        "symbol.Requests_UpdateRequestsRequestId",
        ("vso.symbols_write",),
    ),
    (
        "artifacts",
        "GET",
        "/fabrikam/_apis/symbol/availability",
        "symbol.Availability_CheckAvailability",
        ("vso.symbols",),
    ),
    (
        "auditservice",
        "PUT",
        "/fabrikam/_apis/audit/streams/4",
        "audit.Streams_UpdateStatus",
        ("vso.auditstreams_manage",),
    ),
    (
        "auditservice",
        "GET",
        "/fabrikam/_apis/audit/streams",
        "audit.Streams_QueryAllStreams",
        ("vso.auditlog",),
    ),
    (
        "extmgmt",
        "GET",
        "/fabrikam/_apis/extensionmanagement/installedextensions",
        "extensionManagement.InstalledExtensions_List",
        ("vso.extension",),
    ),
    (
        "extmgmt",
        "POST",
        "/fabrikam/_apis/extensionmanagement/installedextensionsbyname/ms/ext/1.0",
        "extensionManagement.InstalledExtensions_InstallExtensionByName",
        ("vso.extension_manage",),
    ),
    (
        "feeds",
        "DELETE",
        "/fabrikam/Fiber/_apis/packaging/Feeds/f1/retentionpolicies",
        "artifacts.RetentionPolicies_DeleteRetentionPolicy",
        ("vso.packaging_manage",),
    ),
    (
        "feeds",
        "GET",
        "/fabrikam/Fiber/_apis/packaging/Feeds/f1/RecycleBin/Packages/p/Versions/v",
        "artifacts.RecycleBin_GetRecycleBinPackageVersion",
        ("vso.packaging",),
    ),
    (
        "pkgs",
        "POST",
        "/fabrikam/Fiber/_apis/packaging/feeds/f1/pypi/RecycleBin/packagesBatch",
        "artifactsPackageTypes.Python_UpdateRecycleBinPackageVersions",
        ("vso.packaging_write",),
    ),
    (
        "pkgs",
        "GET",
        "/fabrikam/Fiber/_apis/packaging/feeds/f1/npm/@types/node/versions/1.0.0",
        "artifactsPackageTypes.Npm_GetScopedPackageVersion",
        ("vso.packaging",),
    ),
    ("status", "GET", "/_apis/status/health", "status.Health_Get", ()),
    (
        "vsaex",
        "GET",
        "/fabrikam/_apis/userentitlements/u1",
        "memberEntitlementManagement.UserEntitlements_Get",
        ("vso.memberentitlementmanagement",),
    ),
    (
        "vsaex",
        "GET",
        "/fabrikam/_apis/groupentitlements/g1",
        "memberEntitlementManagement.GroupEntitlements_Get",
        ("vso.memberentitlementmanagement",),
    ),
    # the {service}dev.azure.com template: on the main host and on every service host
    (
        "main",
        "DELETE",
        "/fabrikam/_apis/notification/subscriptions/s1",
        "notification.Subscriptions_Delete",
        ("vso.notification_write",),
    ),
    (
        "vsrm",
        "PATCH",
        "/fabrikam/_apis/notification/settings",
        "notification.Settings_Update",
        ("vso.notification_write",),
    ),
]


@pytest.mark.parametrize(("host", "method", "path", "op_id", "scopes"), SPOT_CHECKS)
def test_spot_checks(
    catalog: Catalog, host: str, method: str, path: str, op_id: str, scopes: tuple[str, ...]
) -> None:
    m = catalog.match(host, method, path)
    assert m is not None, f"{method} {path} on {host}"
    assert (m.operation.id, m.operation.scopes) == (op_id, scopes)


def _spec_operations() -> list[tuple[str, str, str, set[str]]]:
    out = []
    for _, path in catalog_build.spec_files(SPECS):
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
        host = catalog_build.host_key(doc["host"])
        for section in ("paths", "x-ms-paths"):
            for raw, item in (doc.get(section) or {}).items():
                for method, op in item.items():
                    if method == "parameters":
                        continue
                    scopes = {
                        s for req in op.get("security") or [] for v in req.values() for s in v
                    }
                    out.append((host, method.upper(), raw.partition("?")[0], scopes))
    return out


@needs_specs
def test_every_spec_operation_matches_with_its_scopes(catalog: Catalog) -> None:
    """Instantiate every template of every spec file; the match grants the spec's scopes."""
    checked = 0
    for host, method, template, scopes in _spec_operations():
        path = re.sub(r"\{([^}]+)\}", lambda m: f"v{len(m.group(1))}x", template).rstrip("/")
        for h in ("main", "vsrm") if host == "*" else (host,):
            m = catalog.match(h, method, path or "/")
            assert m is not None, (h, method, template)
            assert m.operation.template.lower().rstrip("/") == template.lower().rstrip("/")
            assert set(m.operation.scopes) <= scopes or not scopes
            checked += 1
    assert checked > 1100


def test_organization_and_project_are_bound(catalog: Catalog) -> None:
    m = catalog.match("main", "GET", "/Fabrikam/Fabrikam%20Fiber/_apis/git/repositories")
    assert m is not None
    assert (m.organization, m.project) == ("Fabrikam", "Fabrikam Fiber")
    m = catalog.match("main", "GET", "/fabrikam/_apis/projects/6ce954b1/teams")
    assert m is not None and m.project == "6ce954b1"
    m = catalog.match("main", "GET", "/fabrikam/_apis/projects")
    assert m is not None and (m.organization, m.project) == ("fabrikam", None)


def test_matching_is_case_insensitive_and_keeps_the_case_of_values(catalog: Catalog) -> None:
    m = catalog.match("MAIN".lower(), "get", "/FABRIKAM/Fiber/_APIS/Git/Repositories/MyRepo")
    assert m is not None and m.operation.id == "git.Repositories_GetRepository"
    assert m.params["repositoryId"] == "MyRepo"


def test_only_ascii_letters_fold(catalog: Catalog) -> None:
    # U+212A KELVIN SIGN lower-cases to 'k' in Python, not in Azure DevOps' comparisons
    m = catalog.match("pkgs", "GET", "/o/_pac%E2%84%AAaging/feed/nuget/v3/index.json")
    assert m is None or m.operation.id != "packaging.Feed_Read"
    m = catalog.match("main", "GET", "/o/p/_apis/git/repositories/%C3%89t%C3%A9")
    assert m is not None and m.params["repositoryId"] == "\u00c9t\u00e9"


def test_literal_beats_parameter_with_backtracking(catalog: Catalog) -> None:
    # /{organization}/_apis/projects (literal _apis) vs /{organization}/{project}/_apis/...
    m = catalog.match("main", "GET", "/fabrikam/_apis/projects")
    assert m is not None and m.operation.id == "core.Projects_List"
    # a project named like a literal still reaches the project-level operation
    m = catalog.match("main", "GET", "/fabrikam/projects/_apis/git/repositories")
    assert m is not None and m.operation.id == "git.Repositories_List"
    assert m.project == "projects"


def test_trailing_slash_head_and_unknowns(catalog: Catalog) -> None:
    a = catalog.match("main", "GET", "/fabrikam/Fiber/_apis/git/repositories/")
    assert a is not None and a.operation.id == "git.Repositories_List"
    h = catalog.match("main", "HEAD", "/fabrikam/Fiber/_apis/git/repositories")
    assert h is not None and h.operation.id == "git.Repositories_List"
    assert catalog.match("main", "GET", "/fabrikam/Fiber/_apis/git//repositories") is None
    assert catalog.match("main", "GET", "/fabrikam/Fiber/_apis/nothing") is None
    assert catalog.match("main", "TRACE", "/fabrikam/_apis/projects") is None
    assert catalog.match("nohost", "GET", "/fabrikam/_apis/projects") is None
    assert catalog.match("main", "GET", "/") is None


@pytest.mark.parametrize(
    ("method", "path", "query", "op_id", "scopes"),
    [
        (
            "GET",
            "/o/p/_git/r/info/refs",
            "service=git-upload-pack",
            "git.SmartHttp_InfoRefs",
            ("vso.code",),
        ),
        (
            "GET",
            "/o/p/_git/r/info/refs",
            "service=git-receive-pack",
            "git.SmartHttp_InfoRefsReceivePack",
            ("vso.code_write",),
        ),
        (
            "GET",
            "/o/p/_git/r/info/refs",
            "SERVICE=Git-Receive-Pack",
            "git.SmartHttp_InfoRefsReceivePack",
            ("vso.code_write",),
        ),
        (
            "GET",
            "/o/p/_git/r/info/refs",
            "service=git-receive-pack&service=git-receive-pack",
            "git.SmartHttp_InfoRefsReceivePack",
            ("vso.code_write",),
        ),
        ("POST", "/o/p/_git/r.git/git-upload-pack", "", "git.SmartHttp_UploadPack", ("vso.code",)),
        (
            "POST",
            "/o/p/_git/r/git-receive-pack",
            "",
            "git.SmartHttp_ReceivePack",
            ("vso.code_write",),
        ),
        (
            "POST",
            "/o/_git/r/git-receive-pack",
            "",
            "git.SmartHttp_ReceivePackNoProject",
            ("vso.code_write",),
        ),
        ("POST", "/o/p/_git/r/info/lfs/objects/batch", "", "git.Lfs_Batch", ("vso.code",)),
        ("PUT", "/o/p/_git/r/info/lfs/objects/abc123", "", "git.Lfs_Upload", ("vso.code_write",)),
        ("GET", "/o/p/_git/r/info/lfs/objects/abc123", "", "git.Lfs_Download", ("vso.code",)),
        (
            "PUT",
            "/o/_git/r/info/lfs/objects/abc123",
            "",
            "git.Lfs_UploadNoProject",
            ("vso.code_write",),
        ),
    ],
)
def test_git_smart_http_and_lfs(
    catalog: Catalog, method: str, path: str, query: str, op_id: str, scopes: tuple[str, ...]
) -> None:
    m = catalog.match("main", method, path, query)
    assert m is not None and (m.operation.id, m.operation.scopes) == (op_id, scopes)


def test_remembered_matches_answer_as_a_fresh_lookup_would(catalog: Catalog) -> None:
    fresh = Catalog(catalog.operations)
    cases = [
        ("GET", "/o/p/_git/r/info/refs", "service=git-upload-pack"),
        ("GET", "/o/p/_git/r/info/refs", "service=git-receive-pack"),
        ("GET", "/o/p/_git/r/info/refs", ""),
        ("HEAD", "/o/p/_git/r/info/refs", "service=git-receive-pack"),
        ("GET", "/fabrikam/Fiber/_apis/git/repositories", "api-version=7.1"),
        ("HEAD", "/fabrikam/Fiber/_apis/git/repositories", ""),
        ("GET", "/fabrikam/Fiber/_apis/nothing", ""),
        ("POST", "/o/_apis/$batch", ""),
    ]
    first = [fresh.match("main", m, p, q) for m, p, q in cases]
    for _ in range(2):  # the same again, in another order: answered from memory
        for (method, path, query), expected in reversed(list(zip(cases, first, strict=True))):
            assert fresh.match("main", method, path, query) == expected, (method, path, query)
    with pytest.raises(BadRequest):  # a query that picks the operation is read every time
        fresh.match("main", "GET", "/o/p/_git/r/info/refs", "service=a&service=b")
    m = fresh.match("main", "GET", "/fabrikam/Fiber/_apis/git/repositories")
    assert m is not None
    with pytest.raises(TypeError):
        m.params["project"] = "Other"  # type: ignore[index]


def test_remembered_matches_are_bounded(catalog: Catalog, monkeypatch) -> None:
    monkeypatch.setattr("gateway.catalog.RECENT_MATCHES", 10)
    fresh = Catalog(catalog.operations)
    for i in range(25):
        m = fresh.match("main", "GET", f"/o/p{i}/_apis/git/repositories")
        assert m is not None and m.project == f"p{i}"
    assert len(fresh._recent) <= 10
    fresh._recent.clear()
    long = "/o/p/_apis/git/repositories/" + "r" * 600
    assert fresh.match("main", "GET", long) is not None
    assert not fresh._recent  # long paths are looked up each time


def test_conflicting_git_service_parameter_is_ambiguous(catalog: Catalog) -> None:
    with pytest.raises(BadRequest) as err:
        catalog.match(
            "main",
            "GET",
            "/o/p/_git/r/info/refs",
            "service=git-upload-pack&service=git-receive-pack",
        )
    assert err.value.reason == "ambiguous_path"


@pytest.mark.parametrize(
    ("method", "path", "op_id", "scope"),
    [
        ("GET", "/o/_packaging/feed/nuget/v3/index.json", "packaging.Feed_Read", "vso.packaging"),
        ("PUT", "/o/_packaging/feed/nuget/v2/", "packaging.Feed_Publish", "vso.packaging_write"),
        (
            "GET",
            "/o/p/_packaging/feed/npm/registry/@types%2Fnode",
            "packaging.ProjectFeed_Read",
            "vso.packaging",
        ),
        (
            "POST",
            "/o/p/_packaging/feed/pypi/upload",
            "packaging.ProjectFeed_Publish",
            "vso.packaging_write",
        ),
        (
            "POST",
            "/o/_packaging/feed/npm/registry/-/npm/v1/security/audits/quick",
            "packaging.NpmAudit",
            "vso.packaging",
        ),
        (
            "DELETE",
            "/o/_packaging/feed/maven/v1/g/a/1.0/a.jar",
            "packaging.Feed_Publish",
            "vso.packaging_write",
        ),
    ],
)
def test_package_feed_protocols(
    catalog: Catalog, method: str, path: str, op_id: str, scope: str
) -> None:
    m = catalog.match("pkgs", method, path)
    assert m is not None and (m.operation.id, m.operation.scopes) == (op_id, (scope,))


def test_analytics_odata(catalog: Catalog) -> None:
    m = catalog.match("analytics", "GET", "/o/p/_odata/v4.0-preview/WorkItems", "$select=x")
    assert m is not None and (m.operation.id, m.operation.scopes) == (
        "analytics.ProjectOData",
        ("vso.analytics",),
    )
    m = catalog.match("analytics", "POST", "/o/_odata/v4.0-preview/$batch")
    assert m is not None and m.operation.deny_reason == "batch_not_allowed"


@pytest.mark.parametrize("host", ["main", "vsrm", "vssps", "feeds", "custom"])
def test_discovery_is_public_on_every_host(catalog: Catalog, host: str) -> None:
    for method, path in [
        ("OPTIONS", "/o/_apis"),
        ("OPTIONS", "/o/_apis/"),
        ("GET", "/o/_apis/resourceAreas"),
        ("GET", "/o/_apis/connectionData"),
        ("GET", "/o/_apis/ResourceAreas/79134c72-4a58-4b42-976c-04e7115f32bf"),
        ("OPTIONS", "/o/_apis/Location"),
        ("OPTIONS", "/o/_APIS/core"),
        ("OPTIONS", "/o/_apis/Release/"),
        ("OPTIONS", "/_apis/git"),
        ("OPTIONS", "/_apis"),
    ]:
        m = catalog.match(host, method, path)
        assert m is not None and m.operation.public, (host, method, path)


@pytest.mark.parametrize(
    "path",
    [
        "/o/_ws/ClientService.asmx",
        "/tfs/o/_ws/x",
        "/o/p/_apis/x/Repository.ASMX",
        "/o/p/_WS/anything",
    ],
)
def test_soap_is_denied_anywhere(catalog: Catalog, path: str) -> None:
    for host in ("main", "vsrm"):
        m = catalog.match(host, "POST", path)
        assert m is not None and m.operation.deny_reason == "soap_not_supported"


@pytest.mark.parametrize(
    "path",
    [
        "/o/_apis/wit/$batch",
        "/o/p/_apis/wit/%24batch",
        "/o/_apis/Contribution/HierarchyQuery",
        "/o/_apis/Contribution/HierarchyQuery/project/p1",
    ],
)
def test_batch_endpoints_are_marked(catalog: Catalog, path: str) -> None:
    m = catalog.match("main", "POST", path)
    assert m is not None and m.operation.deny_reason == "batch_not_allowed"


def test_scope_inclusion(catalog: Catalog) -> None:
    s = catalog.scopes
    assert {"vso.code", "vso.code_write", "vso.code_manage"} <= s.includes("vso.code_manage")
    assert "vso.code_write" not in s.includes("vso.code")
    assert s.includes("user_impersonation") == frozenset(s.by_name)
    assert "vso.agentpools" in s.includes("vso.environment_manage")  # two steps
    assert s.closure(["vso.build", "vso.work"]) >= {"vso.build", "vso.work", "vso.hooks_write"}
    assert s.high_privilege("vso.code_write") and not s.high_privilege("vso.code")
    assert s.suggest("vso.cod") == "vso.code"
    assert s.suggest("code_write") == "vso.code_write"
    assert s.suggest("zzzzzz") is None
    spec_scopes = {sc for op in catalog for sc in op.scopes}
    assert spec_scopes <= set(s.by_name)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("no-slash", "must start with '/'"),
        ("/a/**/b", "'**' may only be the last"),
        ("/a//b", "empty segment"),
        ("/a/{b", "malformed parameter"),
        ("/a/{}", "malformed"),
        ("/a/{b}{c}", "malformed"),
    ],
)
def test_bad_templates(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_template(template)


def test_mixed_segments_and_prefix_priority() -> None:
    ops = [
        Operation("t.Scoped", "t", "main", "GET", "/{org}/npm/@{scope}/{name}", ("a",)),
        Operation("t.Plain", "t", "main", "GET", "/{org}/npm/{scope}/{name}", ("b",)),
        Operation("t.Lit", "t", "main", "GET", "/{org}/npm/@types/{name}", ("c",)),
        Operation("t.Rest", "t", "main", "GET", "/{org}/npm/**", ("d",)),
    ]
    cat = Catalog(ops)
    m = cat.match("main", "GET", "/o/npm/@types/node")
    assert m is not None and m.operation.id == "t.Lit"
    m = cat.match("main", "GET", "/o/npm/@acme/x")
    assert m is not None and m.operation.id == "t.Scoped" and m.params["scope"] == "acme"
    m = cat.match("main", "GET", "/o/npm/acme/x")
    assert m is not None and m.operation.id == "t.Plain"
    m = cat.match("main", "GET", "/o/npm/a/b/c")
    assert m is not None and m.operation.id == "t.Rest" and m.params["**"] == "a/b/c"
    m = cat.match("main", "GET", "/o/npm")
    assert m is not None and m.operation.id == "t.Rest"


def test_bad_catalog_entries_are_rejected() -> None:
    with pytest.raises(CatalogError, match="method must be"):
        operations_from([{"id": "x.Y", "path": "/a", "method": "FETCH"}], "extras.yaml")
    with pytest.raises(CatalogError, match="unknown deny reason"):
        operations_from([{"id": "x.Y", "path": "/a", "method": "GET", "deny": "nope"}], "e")
    with pytest.raises(CatalogError, match="needs id and path"):
        operations_from([{"path": "/a"}], "e")
    with pytest.raises(CatalogError, match="empty segment"):
        operations_from([{"id": "x.Y", "path": "/a//b", "method": "GET"}], "e")


def test_catalog_is_found_in_the_source_tree() -> None:
    assert data_dir() in (REPO / "policies" / "azure-devops", REPO / "gateway" / "catalog" / "data")


@needs_specs
def test_committed_catalog_is_what_the_generator_writes(tmp_path: Path) -> None:
    assert catalog_build.main([str(SPECS), str(SCOPES_TSV), "--out", str(tmp_path)]) == 0
    for name in ("operations.yaml", "scopes.yaml"):
        assert (tmp_path / name).read_text() == (REPO / "policies/azure-devops" / name).read_text()


def test_generator_reads_bom_and_x_ms_paths_and_rejects_unknown_hosts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = {
        "host": "vsrm.dev.azure.com",
        "securityDefinitions": {"oauth2": {"scopes": {"vso.release": "Read releases."}}},
        "paths": {
            "/{organization}/_apis/release/things": {
                "get": {"operationId": "Things_List", "security": [{"oauth2": ["vso.release"]}]}
            }
        },
        "x-ms-paths": {
            "/{organization}/_apis/release/things?name={name}": {
                "get": {
                    "operationId": "Things_Get By Name",
                    "security": [{"oauth2": ["vso.release", "vso.release_manage"]}],
                }
            }
        },
    }
    area = tmp_path / "specs" / "release"
    for version in ("7.1", "7.2"):
        (area / version).mkdir(parents=True)
    (area / "7.1" / "old.json").write_text("{}")
    (area / "7.2" / "release.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(spec).encode())
    out = tmp_path / "out"
    assert (
        catalog_build.main([str(tmp_path / "specs"), "--out", str(out), "--commit", "abc1234"]) == 0
    )
    cat = Catalog.load(out)
    m = cat.match("vsrm", "GET", "/o/_apis/release/things")
    assert m is not None and m.operation.id == "release.Things_List"
    assert m.operation.scopes == ("vso.release",)
    assert cat.source == "abc1234"
    spec["host"] = "example.com"
    (area / "7.2" / "release.json").write_text(json.dumps(spec))
    assert catalog_build.main([str(tmp_path / "specs"), "--out", str(out)]) == 1
    assert "spec host 'example.com' is not one of upstream.hosts" in capsys.readouterr().err
