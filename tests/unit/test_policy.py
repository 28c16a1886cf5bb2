from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import Catalog
from gateway.config.model import Client, Config, GatewayConfig, Route, RouteMatch
from gateway.policy import Policy, check_policy
from gateway.types import ClientIdentity, Decision, ProjectRef, RequestContext

CATALOG = Catalog.builtin()


def client(name: str, scopes: tuple[str, ...], **kw: Any) -> Client:
    return Client(name=name, credential="cred", scopes=scopes, **kw)


def route(
    name: str, path: str, method: tuple[str, ...] | None = None, host: str = "main", **kw: Any
) -> Route:
    return Route(name=name, match=RouteMatch(method=method, path=path, host=host), **kw)


def config(clients: tuple[Client, ...], routes: tuple[Route, ...] = ()) -> Config:
    return Config(
        path=Path("gateway.yaml"), gateway=GatewayConfig(), clients=clients, routes=routes
    )


CLIENTS = (
    client("reader", ("vso.code",)),
    client("manager", ("vso.code_manage",)),
    client(
        "fiber",
        ("vso.code_write", "vso.work"),
        projects=("fabrikam/Fabrikam Fiber", "fabrikam/6ce954b1"),
    ),
    client("fab-only", ("vso.code",), organizations=("Fabrikam",)),
    client("watcher", ("vso.build",), mode="report"),
    client("everything", ("user_impersonation",)),
    client("jira", ("vso.work_write",)),
    client("batcher", ("vso.work_write",)),
)
ROUTES = (
    route(
        "no-repo-deletes",
        "/{organization}/{project}/_apis/git/repositories/{repositoryId}",
        ("DELETE",),
        deny=True,
    ),
    route(
        "wit-writes-only-jira",
        "/{organization}/{project}/_apis/wit/**",
        ("PATCH", "POST"),
        clients=("jira", "batcher"),
    ),
    route(
        "pushes-need-build",
        "/{organization}/{project}/_apis/git/repositories/{r}/pushes",
        ("POST",),
        scopes=("vso.build",),
    ),
    route(
        "batch-for-batcher",
        "/{organization}/{project}/_apis/wit/$batch",
        ("POST",),
        allow=True,
        clients=("batcher",),
    ),
    route(
        "health", "/_apis/status/health", ("GET",), host="status", allow=True, clients=("reader",)
    ),
    route(
        "custom", "/{organization}/_apis/custom/thing", ("GET",), allow=True, clients=("reader",)
    ),
)
POLICY = Policy(config(CLIENTS, ROUTES), CATALOG)


def decide(
    name: str,
    method: str,
    path: str,
    *,
    host: str = "main",
    query: str = "",
    effective: str | None = None,
    policy: Policy = POLICY,
) -> Decision:
    ctx = RequestContext(request_id="r1", method=method)
    ctx.effective_method = effective or method
    ctx.host, ctx.path, ctx.query = host, path, query
    ctx.match = CATALOG.match(host, ctx.effective_method, path, query)
    return policy.authorize(ClientIdentity(client=name, auth_method="api_key", subject="k1"), ctx)


REPO = "/fabrikam/Fabrikam%20Fiber/_apis/git/repositories"


@pytest.mark.parametrize(
    ("name", "method", "path", "reason", "scopes", "rule"),
    [
        ("reader", "GET", REPO, None, ("vso.code",), None),
        ("reader", "POST", REPO, "missing_scope", ("vso.code_manage",), None),
        ("manager", "POST", REPO, None, ("vso.code_manage",), None),
        ("manager", "GET", REPO + "/r1/commits", None, ("vso.code",), None),  # inclusion
        (
            "manager",
            "DELETE",
            REPO + "/r1",
            "route_denied",
            ("vso.code_manage",),
            "no-repo-deletes",
        ),
        (
            "everything",
            "DELETE",
            REPO + "/r1",
            "route_denied",
            ("vso.code_manage",),
            "no-repo-deletes",
        ),
        ("reader", "GET", "/fabrikam/_apis/nothing/here", "no_matching_operation", (), None),
        ("reader", "POST", "/fabrikam/_ws/ClientService.asmx", "soap_not_supported", (), None),
        ("everything", "POST", "/fabrikam/_apis/x/y.asmx", "soap_not_supported", (), None),
        ("jira", "PATCH", "/fabrikam/Fiber/_apis/wit/workitems/1", None, ("vso.work_write",), None),
        (
            "everything",
            "PATCH",
            "/fabrikam/Fiber/_apis/wit/workitems/1",
            "client_not_allowed_on_route",
            ("vso.work_write",),
            "wit-writes-only-jira",
        ),
        ("everything", "GET", "/fabrikam/Fiber/_apis/wit/workitems/1", None, ("vso.work",), None),
        (
            "manager",
            "POST",
            REPO + "/r1/pushes",
            "missing_scope",
            ("vso.code_write", "vso.build"),
            "pushes-need-build",
        ),
        ("everything", "POST", REPO + "/r1/pushes", None, ("vso.code_write", "vso.build"), None),
        (
            "jira",
            "POST",
            "/fabrikam/Fiber/_apis/wit/$batch",
            "client_not_allowed_on_route",
            (),
            "batch-for-batcher",
        ),
        ("batcher", "POST", "/fabrikam/Fiber/_apis/wit/$batch", None, (), "batch-for-batcher"),
        ("jira", "POST", "/fabrikam/_apis/wit/$batch", "batch_not_allowed", (), None),
        ("reader", "GET", "/fabrikam/_apis/custom/thing", None, (), "custom"),
        (
            "manager",
            "GET",
            "/fabrikam/_apis/custom/thing",
            "client_not_allowed_on_route",
            (),
            "custom",
        ),
        ("reader", "GET", "/fabrikam/Fiber/_apis/build/status/ci", "missing_scope", (), None),
        ("everything", "GET", "/fabrikam/Fiber/_apis/build/status/ci", "missing_scope", (), None),
        ("reader", "OPTIONS", "/fabrikam/_apis", None, (), None),
        ("reader", "GET", "/fabrikam/_apis/connectionData", None, (), None),
        ("reader", "GET", "/fabrikam/Fiber/_git/r/info/refs", None, ("vso.code",), None),
        (
            "reader",
            "POST",
            "/fabrikam/Fiber/_git/r/git-receive-pack",
            "missing_scope",
            ("vso.code_write",),
            None,
        ),
        (
            "manager",
            "POST",
            "/fabrikam/Fiber/_git/r/git-receive-pack",
            None,
            ("vso.code_write",),
            None,
        ),
    ],
)
def test_decisions(
    name: str, method: str, path: str, reason: str | None, scopes: tuple[str, ...], rule: str | None
) -> None:
    d = decide(name, method, path)
    assert (d.allowed, d.reason, d.required_scopes, d.rule) == (
        reason is None,
        reason,
        scopes,
        rule,
    )
    assert not d.report_only
    if reason:
        assert d.message


def test_query_selects_the_receive_pack_advertisement() -> None:
    path = "/fabrikam/Fiber/_git/r/info/refs"
    assert decide("reader", "GET", path, query="service=git-upload-pack").allowed
    d = decide("reader", "GET", path, query="service=git-receive-pack")
    assert (d.allowed, d.reason, d.required_scopes) == (False, "missing_scope", ("vso.code_write",))


def test_route_rules_on_other_hosts() -> None:
    assert decide("reader", "GET", "/_apis/status/health", host="status").rule == "health"
    d = decide("manager", "GET", "/_apis/status/health", host="status")
    assert d.reason == "client_not_allowed_on_route"
    d = decide("reader", "GET", "/_apis/status/health", host="main")
    assert d.reason == "no_matching_operation"


@pytest.mark.parametrize(
    ("name", "method", "path", "reason"),
    [
        ("fiber", "GET", REPO, None),
        ("fiber", "GET", "/FABRIKAM/fabrikam%20fiber/_apis/git/repositories", None),
        ("fiber", "GET", "/fabrikam/6CE954B1/_apis/git/repositories", None),
        ("fiber", "GET", "/fabrikam/Other/_apis/git/repositories", "project_not_allowed"),
        (
            "fiber",
            "GET",
            "/contoso/Fabrikam%20Fiber/_apis/git/repositories",
            "organization_not_allowed",
        ),
        ("fiber", "GET", "/fabrikam/_apis/projects", "project_not_allowed"),
        ("fiber", "GET", "/fabrikam/_apis/projects/6ce954b1/teams", None),
        ("fiber", "OPTIONS", "/fabrikam/_apis", None),
        ("fiber", "OPTIONS", "/contoso/_apis", "organization_not_allowed"),
        ("fiber", "OPTIONS", "/fabrikam/_apis/git", None),  # per-area discovery
        ("fiber", "OPTIONS", "/FABRIKAM/_APIS/Release", None),
        ("fiber", "OPTIONS", "/_apis/Location", None),
        ("fiber", "OPTIONS", "/contoso/_apis/git", "organization_not_allowed"),
        ("fiber", "GET", "/fabrikam/_apis/git/repositories", "project_not_allowed"),  # a form
        ("fiber", "POST", "/fabrikam/_apis/wit/wiql", "project_not_allowed"),
        ("fiber", "GET", "/fabrikam/Fabrikam%20Fiber/_apis/wit/wiql/q1", None),
        ("fab-only", "GET", "/fabrikam/Any/_apis/git/repositories", None),
        ("fab-only", "GET", "/contoso/Any/_apis/git/repositories", "organization_not_allowed"),
        ("fab-only", "OPTIONS", "/contoso/_apis", "organization_not_allowed"),
        (
            "fab-only",
            "GET",
            "/Fabri%E2%84%AAam/Any/_apis/git/repositories",
            "organization_not_allowed",
        ),  # KELVIN SIGN is not 'k' to Azure DevOps
    ],
)
def test_organization_and_project_restrictions(
    name: str, method: str, path: str, reason: str | None
) -> None:
    d = decide(name, method, path)
    assert (d.allowed, d.reason) == (reason is None, reason)


def test_organization_less_operations_under_an_organization_restriction() -> None:
    d = decide("fab-only", "GET", "/_apis/accounts", host="app")
    assert d.reason == "organization_not_allowed"
    assert decide("reader", "GET", "/_apis/profile/profiles/me", host="app").allowed


def test_report_mode_allows_but_keeps_the_reason() -> None:
    d = decide("watcher", "POST", REPO)
    assert (d.allowed, d.report_only, d.reason) == (True, True, "missing_scope")
    assert d.required_scopes == ("vso.code_manage",)
    ok = decide("watcher", "GET", "/fabrikam/Fiber/_apis/build/builds")
    assert (ok.allowed, ok.report_only, ok.reason) == (True, False, None)
    soap = decide("watcher", "POST", "/fabrikam/_ws/x")
    assert (soap.allowed, soap.reason) == (False, "soap_not_supported")


def test_unknown_client_is_denied_even_in_report_mode() -> None:
    d = decide("ghost", "GET", REPO)
    assert (d.allowed, d.reason) == (False, "unknown_client")


def test_method_override_is_authorized_as_named() -> None:
    path = "/fabrikam/Fiber/_apis/wit/workitems/1"
    d = decide("everything", "POST", path, effective="PATCH")
    assert d.reason == "client_not_allowed_on_route"  # the PATCH rule applied, not POST
    assert decide("jira", "POST", path, effective="PATCH").allowed


def test_deny_wins_over_earlier_allow() -> None:
    rules = (
        route("open", "/{organization}/_apis/custom/**", allow=True, clients=("reader",)),
        route("shut", "/{organization}/_apis/custom/secret", deny=True),
    )
    policy = Policy(config(CLIENTS, rules), CATALOG)
    assert decide("reader", "GET", "/o/_apis/custom/public", policy=policy).allowed
    d = decide("reader", "GET", "/o/_apis/custom/secret", policy=policy)
    assert (d.reason, d.rule) == ("route_denied", "shut")


def test_check_policy_errors_and_warnings() -> None:
    clients = (
        client("ci", ("vso.cod", "vso.code_write", "vso.connected_server", "vso.code")),
        client("tool", ("code_manage",)),
    )
    routes = (
        route("typo-client", "/{organization}/_apis/projects", ("GET",), clients=("cj",)),
        route("extra-typo", "/{organization}/_apis/projects", ("GET",), scopes=("vso.bild",)),
        route("nowhere", "/{organization}/_apis/nothing/here", ("GET",), deny=True),
        route("open-door", "/{organization}/_apis/custom", ("GET",), allow=True),
        route("bad-path", "/a/**/b", deny=True),
        route("bad-host", "/a", host="nope", deny=True),
        route("fine", "/{organization}/{project}/_apis/git/**", ("DELETE",), deny=True),
        route("typo", "/{organization}/{project}/_apis/bulid/definitions/{id}", deny=True),
        route("form", "/{organization}/_apis/git/repositories", ("GET",), deny=True),
    )
    problems = check_policy(config(clients, routes), CATALOG)
    errors = [str(p) for p in problems if p.severity == "error"]
    warnings = [(p.code, str(p)) for p in problems if p.severity == "warning"]
    assert errors == [
        "gateway.yaml: clients[0].scopes[0]: unknown scope 'vso.cod' (did you mean 'vso.code'?)",
        "gateway.yaml: clients[1].scopes[0]: unknown scope 'code_manage' "
        "(did you mean 'vso.code_manage'?)",
        "gateway.yaml: routes[0].clients[0]: unknown client 'cj' (did you mean 'ci'?)",
        "gateway.yaml: routes[1].scopes[0]: unknown scope 'vso.bild' (did you mean 'vso.build'?)",
        "gateway.yaml: routes[4].match.path: '**' may only be the last segment: '/a/**/b'",
        "gateway.yaml: routes[5].match.host: unknown host 'nope' (upstream.hosts: "
        "advsec, almsearch, analytics, app, artifacts, auditservice, extmgmt, feeds, main, "
        "pkgs, status, vsaex, vsrm, vssps, vstmr)",
    ]
    assert warnings == [
        (
            "high_privilege_scope",
            "gateway.yaml: clients[0].scopes[1]: client 'ci' is granted high-privilege scope "
            "'vso.code_write'; grant the narrowest scope its operations need",
        ),
        (
            "unused_scope",
            "gateway.yaml: clients[0].scopes[2]: no operation in the catalog needs "
            "'vso.connected_server' or a scope it includes; the grant has no effect",
        ),
        (
            "route_matches_nothing",
            "gateway.yaml: routes[2]: rule 'nowhere' matches no operation in the "
            "catalog (GET /{organization}/_apis/nothing/here on host 'main')",
        ),
        (
            "route_allows_every_client",
            "gateway.yaml: routes[3]: rule 'open-door' allows every client; "
            "name the clients that need it",
        ),
        (
            "route_matches_nothing",
            "gateway.yaml: routes[7]: rule 'typo' matches no operation in the catalog "
            "(any method /{organization}/{project}/_apis/bulid/definitions/{id} on host 'main')",
        ),
    ]


def test_check_policy_uses_config_locate(tmp_path: Path) -> None:
    from gateway.config.load import load

    (tmp_path / "gateway.yaml").write_text(
        "credentials: {c: {type: pat, pat_file: pat.txt}}\npolicies: [clients.yaml]\n"
    )
    (tmp_path / "pat.txt").write_text("x")
    (tmp_path / "clients.yaml").write_text(
        "clients:\n"
        "  - name: ci\n"
        "    credential: c\n"
        "    api_keys: [{id: k, sha256: '" + "0" * 64 + "'}]\n"
        "    scopes:\n"
        "      - vso.code\n"
        "      - vso.wrok\n"
    )
    cfg = load(tmp_path / "gateway.yaml")
    errors = [str(p) for p in check_policy(cfg, CATALOG)]
    assert any(
        e.endswith(":7: clients[0].scopes[1]: unknown scope 'vso.wrok' (did you mean 'vso.work'?)")
        for e in errors
    ), errors


def test_route_rules_on_any_host_with_prefixed_parameters() -> None:
    rules = (
        route(
            "no-scoped-npm",
            "/{organization}/_packaging/{feed}/npm/registry/@{scope}/**",
            ("PUT",),
            host="*",
            deny=True,
        ),
        route(
            "feed-admins",
            "/{organization}/_packaging/**",
            ("DELETE",),
            host="pkgs",
            clients=("manager",),
        ),
    )
    pkg = Policy(config((client("pub", ("vso.packaging_write",)), *CLIENTS), rules), CATALOG)
    npm = "/o/_packaging/f/npm/registry/@acme%2Fwidget"
    d = decide("pub", "PUT", npm, host="pkgs", policy=pkg)
    assert (d.reason, d.rule) == ("route_denied", "no-scoped-npm")
    assert decide(
        "pub", "PUT", "/o/_packaging/f/npm/registry/widget", host="pkgs", policy=pkg
    ).allowed
    d = decide("pub", "DELETE", "/o/_packaging", host="pkgs", policy=pkg)  # ** matches none
    assert (d.reason, d.rule) == ("client_not_allowed_on_route", "feed-admins")


FIBER_ID = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"
OTHER_ID = "0b5a2f7e-9d1c-4e3f-8a6b-2c4d6e8f0a1b"
BY_ID = Policy(
    config(
        (
            client("named", ("vso.code",), projects=("fabrikam/Fabrikam-Fiber",)),
            client("listed-id", ("vso.code",), projects=(f"fabrikam/{FIBER_ID}",)),
            client("free", ("vso.code",)),
        )
    ),
    CATALOG,
)


def _by_id(name: str, path: str, ref: ProjectRef | None) -> tuple[bool, Decision]:
    ctx = RequestContext(request_id="r1", method="GET", effective_method="GET", path=path)
    ctx.match = CATALOG.match("main", "GET", path)
    ctx.project = ref
    lookup = BY_ID.project_lookup(name, ctx.match)
    identity = ClientIdentity(client=name, auth_method="api_key", subject="k1")
    return lookup, BY_ID.authorize(identity, ctx)


@pytest.mark.parametrize(
    ("name", "project", "ref", "lookup", "reason"),
    [
        ("named", FIBER_ID, ProjectRef(FIBER_ID, "Fabrikam-Fiber"), True, None),
        ("named", FIBER_ID.upper(), ProjectRef(FIBER_ID, "fabrikam-fiber"), True, None),
        ("named", OTHER_ID, ProjectRef(OTHER_ID, "Contoso-Ops"), True, "project_not_allowed"),
        ("named", OTHER_ID, ProjectRef(OTHER_ID, None), True, "project_not_allowed"),
        ("named", OTHER_ID, None, True, "project_not_allowed"),  # offline: not resolved
        ("named", "Fabrikam-Fiber", None, False, None),
        ("listed-id", FIBER_ID, None, False, None),
        ("listed-id", "Fabrikam-Fiber", ProjectRef(FIBER_ID, "Fabrikam-Fiber"), True, None),
        ("listed-id", "Fabrikam-Fiber", None, True, "project_not_allowed"),
        (
            "listed-id",
            "Contoso-Ops",
            ProjectRef(OTHER_ID, "Contoso-Ops"),
            True,
            "project_not_allowed",
        ),
        ("free", OTHER_ID, None, False, None),
    ],
)
def test_projects_named_by_id_are_decided_on_their_name(
    name: str, project: str, ref: ProjectRef | None, lookup: bool, reason: str | None
) -> None:
    wants, d = _by_id(name, f"/fabrikam/{project}/_apis/git/repositories", ref)
    assert wants is lookup
    assert (d.allowed, d.reason) == (reason is None, reason)


def test_discovery_needs_no_lookup() -> None:
    assert not BY_ID.project_lookup("named", CATALOG.match("main", "OPTIONS", "/fabrikam/_apis"))
