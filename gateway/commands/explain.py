"""`azdo-gateway explain -c FILE --client NAME METHOD URL`: why a request would pass or not.

Runs one request through the same stages the gateway runs (canonicalize, match,
authorize) without sending anything anywhere, and prints the operation, the
scopes it needs, what the client is granted, the route rules that apply and
the decision with its reason. URL may be a path (`/fabrikam/_apis/projects`), a
gateway URL (including `/_hosts/{name}/...`) or an Azure DevOps URL
(`https://vsrm.dev.azure.com/...`): a URL under one of `upstream.hosts` is
explained for that host, a URL on any other host is refused. Exit status: 0
allowed, 1 denied or rejected, 2 when the configuration or the arguments are
wrong (a URL on no configured host included).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

HELP = "which operation a request is, which scopes it needs, allowed or why not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="gateway.yaml", help="default: gateway.yaml")
    p.add_argument("--client", required=True, help="policy client name")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (e.g. X-HTTP-Method-Override); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.add_argument("method", metavar="METHOD")
    p.add_argument("url", metavar="URL")


class NotUpstream(ValueError):
    """A URL on a host that is neither the gateway nor one of `upstream.hosts`."""


def _origin(url: str) -> tuple[str, str, int] | None:
    from gateway.proxy.rewrite.urls import origin_of  # the rewriter's reading of an origin

    return origin_of(urlsplit(url))


def gateway_origins(listen: Any) -> list[str]:
    """Where the gateway itself is reached: its public URL, its listener, allowed hosts."""
    scheme = "https" if listen.tls else "http"
    out = [listen.public_url] if listen.public_url else []
    hosts = [listen.host]
    if listen.host in ("", "0.0.0.0", "::"):  # noqa: S104 - describing, not binding
        hosts = ["127.0.0.1", "localhost", "[::1]"]
    out += [f"{scheme}://{h}:{listen.port}" for h in hosts]
    out += [f"{scheme}://{h}" for h in listen.allowed_hosts]
    return out


def split_url(
    url: str, hosts: dict[str, str], public_url: str | None, gateway: Sequence[str] = ()
) -> str:
    """The request target the gateway would see for `url`.

    Raises NotUpstream for a URL on any other host: reading it as a path would
    explain a request no one can send.
    """
    if url.startswith("/"):
        return url
    parts = urlsplit(url if "://" in url else "https://" + url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    origin = _origin(url if "://" in url else "https://" + url)
    if origin is not None:
        for own in ([public_url] if public_url else []) + list(gateway):
            if _origin(own) == origin:
                return target
        for name, base in hosts.items():
            b = urlsplit(base)
            if _origin(base) == origin and (target.lower() + "/").startswith(
                b.path.rstrip("/").lower() + "/"
            ):
                rest = target[len(b.path.rstrip("/")) :] or "/"
                return rest if name == "main" else f"/_hosts/{name}{rest}"
    own = ", ".join(dict.fromkeys(([public_url] if public_url else []) + list(gateway)))
    hint = f" (did you mean the path '/{url}'?)" if "://" not in url and "." not in url else ""
    raise NotUpstream(
        f"{url}: {parts.netloc or url!r} is neither the gateway ({own or 'none'}) nor a host "
        f"of upstream.hosts ({', '.join(hosts)}){hint}. Give a path (/fabrikam/_apis/projects), "
        "a gateway URL or an Azure DevOps URL on one of upstream.hosts."
    )


def explain(
    config: Any, catalog: Any, client: str, method: str, url: str, headers: list[tuple[str, str]]
) -> dict[str, Any]:
    from gateway.canonical import canonicalize, effective_method
    from gateway.errors import BadRequest
    from gateway.policy import Policy
    from gateway.types import ClientIdentity, RequestContext

    gw = config.gateway
    target = split_url(url, gw.upstream.hosts, gw.listen.public_url, gateway_origins(gw.listen))
    c = config.client(client)
    out: dict[str, Any] = {
        "request": {"method": method.upper(), "target": target},
        "client": {
            "name": c.name,
            "scopes": list(c.scopes),
            "mode": c.mode,
            "organizations": None if c.organizations is None else list(c.organizations),
            "projects": None if c.projects is None else list(c.projects),
        },
    }
    ctx = RequestContext(request_id="explain", method=method.upper())
    try:
        t = canonicalize(target, gw.upstream.hosts, max_length=gw.limits.max_url_length)
        ctx.host, ctx.path, ctx.query = t.host, t.path, t.query
        ctx.effective_method = effective_method(ctx.method, headers)
        ctx.match = catalog.match(ctx.host, ctx.effective_method, ctx.path, ctx.query)
    except BadRequest as err:
        out["decision"] = {
            "allowed": False,
            "status": 400,
            "reason": err.reason,
            "message": err.message,
            "reportOnly": False,
            "rule": None,
        }
        return out
    out["request"].update(
        host=ctx.host, path=ctx.path, query=ctx.query, effectiveMethod=ctx.effective_method
    )
    m = ctx.match
    op = m.operation if m else None
    out["operation"] = (
        None
        if op is None
        else {
            "id": op.id,
            "area": op.area,
            "host": op.host,
            "method": op.method,
            "template": op.template,
            "omits": list(op.omits),
            "fullTemplate": _full_template(catalog, op),
            "scopes": list(op.scopes),
            "public": op.public,
            "deny": op.deny_reason,
            "note": op.note,
            "params": dict(m.params) if m else {},
            "organization": m.organization if m else None,
            "project": m.project if m else None,
        }
    )
    policy = Policy(config, catalog)
    out["routes"] = [
        r.name
        for r in policy.routes
        if r.match(ctx.host, ctx.effective_method, *_split(ctx.path)) is not None
    ]
    identity = ClientIdentity(client=client, auth_method="api_key", subject="explain")
    d = policy.authorize(identity, ctx)
    held = catalog.scopes.closure(c.scopes)
    out["requiredScopes"] = list(d.required_scopes)
    out["satisfiedBy"] = sorted(s for s in d.required_scopes if s in held)
    out["decision"] = {
        "allowed": d.allowed,
        "status": 200 if d.allowed else 403,
        "reason": d.reason,
        "message": d.message,
        "reportOnly": d.report_only,
        "rule": d.rule,
    }
    return out


def _full_template(catalog: Any, op: Any) -> str:
    """The template of the operation a form belongs to (the form's own when it is none)."""
    if not op.omits:
        return str(op.template)
    for other in catalog.find(op.id):
        if not other.omits and other.method == op.method and other.host == op.host:
            return str(other.template)
    return str(op.template)


def _split(path: str) -> tuple[list[str], list[str]]:
    from gateway.catalog import split_path

    found = split_path(path)
    return (["\x00"], ["\x00"]) if found is None else (found[1], found[0])


def render(x: dict[str, Any], scopes: Any) -> str:
    req, dec, cl = x["request"], x["decision"], x["client"]
    lines = [f"request     {req['method']} {req['target']}"]
    if "path" in req:
        via = (
            ""
            if req["effectiveMethod"] == req["method"]
            else f" (authorized as {req['effectiveMethod']})"
        )
        lines.append(
            f"canonical   {req['effectiveMethod']} {req['path']}"
            + (f"?{req['query']}" if req["query"] else "")
            + f" on host {req['host']}{via}"
        )
    op = x.get("operation")
    if op:
        lines.append(f"operation   {op['id']} (area {op['area']})")
        lines.append(f"template    {op['method']} {op['template']}")
        if op.get("omits"):
            lines.append(
                f"form        of {op['fullTemplate']}, without {', '.join(op['omits'])} "
                "(optional in the specification)"
            )
        if op["params"]:
            lines.append("binds       " + ", ".join(f"{k}={v}" for k, v in op["params"].items()))
        if op["note"]:
            lines.append(f"note        {op['note']}")
        if op["public"]:
            lines.append("requires    nothing: any authenticated client (discovery)")
        elif op["scopes"]:
            wider = sorted(
                {w for s in op["scopes"] for w in scopes.included_by(s)} - set(op["scopes"])
            )
            lines.append(
                "requires    "
                + " or ".join(op["scopes"])
                + (f" (or a scope that includes it: {', '.join(wider)})" if wider else "")
            )
        elif not op["deny"]:
            lines.append(
                "requires    the specification states no scope: only a route rule "
                "with allow: true permits it"
            )
    elif "path" in req:
        lines.append("operation   none: no Azure DevOps operation matches")
    if x.get("routes"):
        lines.append("routes      " + ", ".join(x["routes"]))
    where = []
    if cl["organizations"] is not None:
        where.append(f"organizations {', '.join(cl['organizations'])}")
    if cl["projects"] is not None:
        where.append(f"projects {', '.join(cl['projects'])}")
    lines.append(
        f"client      {cl['name']}: scopes {', '.join(cl['scopes']) or 'none'}"
        + (f"; {'; '.join(where)}" if where else "")
        + f"; mode {cl['mode']}"
    )
    if dec["allowed"] and dec["reportOnly"]:
        verdict = f"ALLOWED (report mode; would be denied: {dec['reason']})"
    elif dec["allowed"]:
        verdict = "ALLOWED" + (f" by route rule {dec['rule']}" if dec["rule"] else "")
    else:
        verdict = f"{'REJECTED' if dec['status'] == 400 else 'DENIED'} ({dec['reason']})"
    lines.append(f"decision    {verdict}")
    if dec["message"]:
        lines.append(f"why         {dec['message']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from gateway.catalog import Catalog
    from gateway.errors import ConfigError
    from gateway.loading import load_checked

    catalog = Catalog.builtin()
    try:
        config = load_checked(args.config, catalog=catalog)
    except ConfigError as err:
        for problem in err.errors:
            print(problem, file=sys.stderr)
        return 2
    if config.client(args.client) is None:
        names = [c.name for c in config.clients]
        hint = difflib.get_close_matches(args.client, names, n=1, cutoff=0.5)
        print(
            f"unknown client {args.client!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; clients: {', '.join(names) or 'none'}",
            file=sys.stderr,
        )
        return 2
    headers = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            print(f"bad header {h!r}: expected 'Name: value'", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    try:
        result = explain(config, catalog, args.client, args.method, args.url, headers)
    except NotUpstream as err:
        print(f"explain: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render(result, catalog.scopes))
    return 0 if result["decision"]["allowed"] else 1
