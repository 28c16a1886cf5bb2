"""Stage 3: authorize a matched request against the client's policy.

Takes the client identity and the request context (canonical host and path,
effective method, the matched operation) and returns a Decision. Pure: no I/O,
no aiohttp. Default deny, in this order:

1. SOAP (`soap_not_supported`): always, whatever the rules or mode say.
2. Route rules, in file order, deny wins: a matching `deny: true` rule
   (`route_denied`); a matching rule with `clients:` that does not name the
   client (`client_not_allowed_on_route`).
3. No operation (`no_matching_operation`) or a batch endpoint
   (`batch_not_allowed`) unless a matching rule says `allow: true`.
4. The client's `organizations` (`organization_not_allowed`) and `projects`
   (`project_not_allowed`); an organization-wide operation is outside every
   project, so a project-restricted client may only call discovery ones. A
   project named by id is decided on its name (and a name on its id), as
   `ctx.project` gives them (looked up by `gateway.projects` when
   `project_lookup` says the decision depends on it); an id that was not
   resolved is denied, unless the client lists that id.
5. Scopes (`missing_scope`): one of the operation's scopes, directly or through
   a granted scope that includes it; every extra scope of every matching rule.

A client in `mode: report` gets `allowed=True, report_only=True` with the reason
it would have been denied for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import unquote

from gateway.catalog import PROJECT_PARAMS, Catalog, fold, split_path
from gateway.config.model import Client, Config
from gateway.policy.check import check_policy
from gateway.policy.routes import ANY, CompiledRoute, compile_routes
from gateway.projects import is_guid as _is_guid
from gateway.types import ClientIdentity, Decision, Match, Operation, ProjectRef, RequestContext

__all__ = ["Policy", "check_policy"]

NEVER_REPORT_ONLY = frozenset({"soap_not_supported", "unknown_client"})


@dataclass(frozen=True, slots=True)
class ClientRules:
    client: Client
    held: frozenset[str]  # every scope the grants amount to
    organizations: frozenset[str] | None  # lower case; None: any
    projects: Mapping[str, frozenset[str]] | None  # org -> projects, lower case; None: any
    by_id: frozenset[str] = frozenset()  # organizations (lower case) where `projects` has ids


def client_rules(client: Client, catalog: Catalog) -> ClientRules:
    projects: dict[str, set[str]] | None = None
    if client.projects is not None:
        projects = {}
        for entry in client.projects:
            org, _, project = entry.partition("/")
            projects.setdefault(fold(org.strip()), set()).add(fold(project.strip()))
    orgs: set[str] | None = None
    if client.organizations is not None:
        orgs = {fold(o.strip()) for o in client.organizations}
    elif projects is not None:
        orgs = set(projects)
    return ClientRules(
        client=client,
        held=catalog.scopes.closure(client.scopes),
        organizations=None if orgs is None else frozenset(orgs),
        projects=None if projects is None else {o: frozenset(p) for o, p in projects.items()},
        by_id=frozenset(o for o, ps in (projects or {}).items() if any(map(_is_guid, ps))),
    )


def _deny(
    reason: str, message: str, scopes: tuple[str, ...] = (), rule: str | None = None
) -> Decision:
    return Decision(False, reason, scopes, rule=rule, message=message)


class Policy:
    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog
        self.routes: tuple[CompiledRoute, ...] = compile_routes(config.routes)[0]
        self.clients = {c.name: client_rules(c, catalog) for c in config.clients}
        self._by_key: dict[tuple[str, str], tuple[CompiledRoute, ...]] = {}
        self._allow_cache: dict[tuple[str, ...], Decision] = {}

    def _allowed(self, required: tuple[str, ...]) -> Decision:
        """The (immutable, shared) allow decision for an operation's scopes."""
        found = self._allow_cache.get(required)
        if found is None:
            found = Decision(True, None, required)
            if len(self._allow_cache) < 4096:  # one per distinct scope tuple of the catalog
                self._allow_cache[required] = found
        return found

    def _routes_for(self, host: str, method: str) -> tuple[CompiledRoute, ...]:
        """The rules that can apply to a host and method, in file order (memoized)."""
        key = (host, method)
        found = self._by_key.get(key)
        if found is None:
            found = tuple(
                r
                for r in self.routes
                if (r.host == ANY or r.host.lower() == host.lower())
                and (r.methods is None or method in r.methods)
            )
            if len(self._by_key) < 4096:  # keys are host names and methods: bounded
                self._by_key[key] = found
        return found

    def authorize(self, identity: ClientIdentity, ctx: RequestContext) -> Decision:
        rules = self.clients.get(identity.client)
        if rules is None:
            return _deny("unknown_client", f"no policy client named {identity.client!r}")
        decision = self.decide(rules, ctx)
        if (
            not decision.allowed
            and rules.client.mode == "report"
            and decision.reason not in NEVER_REPORT_ONLY
        ):
            return replace(decision, allowed=True, report_only=True)
        return decision

    def project_lookup(self, client: str, match: Match | None) -> bool:
        """Whether the decision on `match` for `client` depends on the project's other
        name: its name when the request names an id, its id when the client's
        `projects` lists ids of that organization."""
        rules = self.clients.get(client)
        if rules is None or rules.projects is None or match is None:
            return False
        org, project = match.organization, match.project
        if not org or not project or match.operation.public or match.operation.deny_reason:
            return False
        if "%" in org:
            org = unquote(org)
        if _is_guid(project):
            return project.lower() not in rules.projects.get(fold(org), frozenset())
        return fold(org) in rules.by_id

    def decide(self, rules: ClientRules, ctx: RequestContext) -> Decision:
        name = rules.client.name
        method = ctx.effective_method or ctx.method
        op: Operation | None = ctx.match.operation if ctx.match else None
        required = op.scopes if op else ()
        if op is not None and op.deny_reason == "soap_not_supported":
            return _deny("soap_not_supported", "SOAP web services are not supported")
        matched: list[tuple[CompiledRoute, Mapping[str, str]]] = []
        candidates = self._routes_for(ctx.host, method)
        split = split_path(ctx.path) if candidates else None
        if split is not None:
            original, lowered = split
            for route in candidates:
                params = route.match(ctx.host, method, lowered, original)
                if params is not None:
                    matched.append((route, params))
        for route, _ in matched:
            if route.rule.deny:
                return _deny(
                    "route_denied", f"denied by route rule {route.name!r}", required, route.name
                )
        for route, _ in matched:
            allowed = route.rule.clients
            if allowed is not None and name not in allowed:
                return _deny(
                    "client_not_allowed_on_route",
                    f"route rule {route.name!r} allows only {', '.join(allowed) or 'no clients'}",
                    required,
                    route.name,
                )
        allow = next((r for r, _ in matched if r.rule.allow), None) if matched else None
        if op is None and allow is None:
            return _deny(
                "no_matching_operation", f"no Azure DevOps operation matches {method} {ctx.path}"
            )
        if op is not None and op.deny_reason and allow is None:
            return _deny(
                op.deny_reason,
                f"{op.id}: {op.note or op.deny_reason} "
                "(a route rule with allow: true can permit it)",
                required,
            )
        public = op is not None and op.public
        if rules.organizations is not None or rules.projects is not None:
            org, project = _bound(ctx, matched)
            denial = _where(rules, org, project, public, required, ctx.project)
            if denial is not None:
                return denial
        if op is not None and not public and not op.deny_reason:
            if not op.scopes and allow is None:
                return _deny(
                    "missing_scope",
                    f"{op.id}: the Azure DevOps specification states "
                    "no scope for it; only a route rule with allow: true can permit it",
                )
            if op.scopes and rules.held.isdisjoint(op.scopes):
                granted = ", ".join(rules.client.scopes) or "none"
                return _deny(
                    "missing_scope",
                    f"{op.id} needs {' or '.join(op.scopes)}; client {name!r} is granted {granted}",
                    required,
                )
        if not matched:
            return self._allowed(required)
        extra: list[str] = []
        for route, _ in matched:
            for scope in route.rule.scopes:
                if scope not in rules.held:
                    return _deny(
                        "missing_scope",
                        f"route rule {route.name!r} also requires {scope}",
                        (*required, *route.rule.scopes),
                        route.name,
                    )
                extra.append(scope)
        decided_by = (
            allow.name
            if allow is not None and (op is None or op.deny_reason or not op.scopes)
            else None
        )
        return Decision(True, None, (*required, *extra), rule=decided_by)


def _bound(
    ctx: RequestContext, matched: list[tuple[CompiledRoute, Mapping[str, str]]]
) -> tuple[str | None, str | None]:
    if ctx.match is not None and ctx.match.operation.id not in ("soap.WebServices", "batch.Batch"):
        org, project = ctx.match.organization, ctx.match.project
    else:
        org = project = None
        for _, params in matched:
            org = org or params.get("organization")
            project = project or next((params[p] for p in PROJECT_PARAMS if p in params), None)
    # the catalog binds decoded values; route parameters are decoded here
    if org and "%" in org:
        org = unquote(org)
    if project and "%" in project:
        project = unquote(project)
    return org or None, project or None


def _where(
    rules: ClientRules,
    org: str | None,
    project: str | None,
    public: bool,
    required: tuple[str, ...],
    ref: ProjectRef | None = None,
) -> Decision | None:
    """Deny when the organization or project is outside the client's restrictions."""
    if rules.organizations is not None:
        if org is None:
            if not public:
                return _deny(
                    "organization_not_allowed",
                    "the request names no organization; "
                    f"client is limited to {', '.join(sorted(rules.organizations))}",
                    required,
                )
        elif fold(org) not in rules.organizations:
            return _deny(
                "organization_not_allowed",
                f"organization {org!r} is not allowed for this client",
                required,
            )
    if rules.projects is not None and not public:
        if project is None:
            return _deny(
                "project_not_allowed",
                "organization-wide operation; client is limited to named projects",
                required,
            )
        allowed = rules.projects.get(fold(org or ""), frozenset())
        names = {fold(project)}
        if ref is not None:
            names.update(fold(n) for n in (ref.id, ref.name) if n)
        if names.isdisjoint(allowed):
            if _is_guid(project) and (ref is None or ref.name is None):
                return _deny(
                    "project_not_allowed",
                    f"project id {project!r} could not be resolved to a project "
                    "this client may use",
                    required,
                )
            shown = repr(project)
            if ref is not None and ref.name and fold(ref.name) != fold(project):
                shown = f"{ref.name!r} (id {project})"
            return _deny(
                "project_not_allowed",
                f"project {shown} is not allowed for this client",
                required,
            )
    return None
