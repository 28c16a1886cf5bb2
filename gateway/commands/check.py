"""`azdo-gateway check`: validate configuration and policies, exit 1 on error.

Prints every problem (`file:line: key: message`) and exits 1, or prints a
one-screen summary of what the configuration sets up and exits 0. Warnings
(`warning: ...`) and notes (`note: ...`) are printed either way; `--strict`
exits 1 on a warning too. `--json` prints the same as one JSON object,
`--offline` checks without the secrets (for CI).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from gateway.config.model import Config
    from gateway.config.problems import Problem

HELP = "validate configuration and policies (exit 1 on error)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", default="gateway.yaml", help="default: gateway.yaml")
    p.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"ok", "errors", "warnings", "notes", "summary"} as JSON',
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="do not require secrets: unset ${ENV} and missing secret files are notes",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="also acquire a token with every credential, try the state backend "
        "(Redis: PING and an encrypted round trip), and report each outcome",
    )


def _wrap(label: str, text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=f"{label:<13}", subsequent_indent=" " * 13)


def summary(config: object, catalog_size: int, out: TextIO) -> None:
    from gateway.config.model import Config
    from gateway.proxy.bodylimits import describe

    assert isinstance(config, Config)
    gw = config.gateway
    listen, tls = gw.listen, gw.listen.tls
    scheme = "https" if tls else "http"
    policy_files = config.sources.files[1:]
    print(
        f"{config.sources.gateway_file}: ok: {len(config.clients)} clients, "
        f"{len(gw.credentials)} credentials, {len(config.routes)} routes, "
        f"{len(policy_files)} policy files, {catalog_size} catalog operations",
        file=out,
    )
    print(file=out)
    proxy = f"{scheme}://{listen.host}:{listen.port}"
    if tls and tls.client_ca_file:
        proxy += " (client certificates " + (
            "required)" if tls.require_client_cert else "accepted)"
        )
    if listen.public_url:
        proxy += f", public URL {listen.public_url}"
    print(_wrap("listen", proxy), file=out)
    print(_wrap("admin", f"http://{gw.admin.host}:{gw.admin.port}"), file=out)
    hosts = gw.upstream.hosts
    others = ", ".join(name for name in hosts if name != "main")
    print(
        _wrap("upstream", f"main {hosts['main']}" + (f"; also {others}" if others else "")),
        file=out,
    )
    ident = gw.identity
    if ident.tenant_id or ident.audiences:
        text = f"tenant {ident.tenant_id or '-'} at {ident.authority_host}"
        if ident.audiences:
            text += f"; accepts audiences {', '.join(ident.audiences)}"
        print(_wrap("identity", text), file=out)
    by_type: dict[str, list[str]] = defaultdict(list)
    for name, cred in gw.credentials.items():
        by_type[cred.type].append(name)
    print(
        _wrap(
            "credentials", "; ".join(f"{t}: {', '.join(n)}" for t, n in by_type.items()) or "none"
        ),
        file=out,
    )
    print(_wrap("audit", "stdout" if gw.audit.file == "-" else (gw.audit.file or "off")), file=out)
    if gw.state.backend == "redis":
        text = f"redis, keys under '{gw.state.key_prefix}', tokens encrypted"
        down = "per-process limits" if gw.state.on_error == "open" else "503 for limited clients"
        text += f"; Redis down: {down} (timeout {gw.state.timeout_s:g}s)"
        print(_wrap("state", text), file=out)
    print(_wrap("body limits", describe(gw.limits)), file=out)
    print(_wrap("policies", ", ".join(policy_files) or "none"), file=out)
    if config.clients:
        print(file=out)
        rows = []
        for client in config.clients:
            auth = []
            if client.api_keys:
                auth.append(f"api_keys({len(client.api_keys)})")
            if client.entra:
                auth.append("entra")
            if client.certificates:
                auth.append("certificate")
            scope = ", ".join(client.scopes) or "-"
            if client.organizations is not None:
                scope += f"; orgs {', '.join(client.organizations)}"
            if client.projects is not None:
                scope += f"; projects {', '.join(client.projects)}"
            if client.mode == "report":
                scope += " [report only]"
            rows.append((client.name, " ".join(auth) or "none", client.credential, scope))
        widths = [
            max(len(r[i]) for r in (*rows, ("client", "auth", "credential"))) for i in range(3)
        ]
        header = ("client", "auth", "credential", "scopes")
        for row in (header, *rows):
            line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  "
            rest = textwrap.fill(
                row[3],
                width=max(100, len(line) + 30),
                initial_indent=line,
                subsequent_indent=" " * len(line),
                break_on_hyphens=False,
            )
            print(rest, file=out)
    if config.routes:
        print(file=out)
        parts = []
        for route in config.routes:
            what = "deny" if route.deny else "allow" if route.allow else ""
            if route.clients is not None:
                what = (what + " " if what else "") + f"clients {', '.join(route.clients)}"
            if route.scopes:
                what = (what + " " if what else "") + f"+scopes {', '.join(route.scopes)}"
            parts.append(f"{route.name} ({what})")
        print(_wrap("routes", "; ".join(parts)), file=out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _json(
    config: Config | None, problems: Sequence[Problem], acknowledged: int, catalog_size: int
) -> dict[str, object]:
    errors = [p.as_dict() for p in problems if p.severity == "error"]
    warnings = [p.as_dict() for p in problems if p.severity == "warning"]
    notes = [p.as_dict() for p in problems if p.severity == "note"]
    summary: dict[str, object] = {
        "errors": len(errors),
        "warnings": len(warnings),
        "notes": len(notes),
        "acknowledged": acknowledged,
    }
    if config is not None:
        summary.update(
            clients=len(config.clients),
            credentials=len(config.gateway.credentials),
            routes=len(config.routes),
            policyFiles=len(config.sources.files) - 1,
            catalogOperations=catalog_size,
        )
    return {
        "ok": not errors,
        "errors": errors,
        "warnings": warnings,
        "notes": notes,
        "summary": summary,
    }


def _print(problems: Sequence[Problem], out: TextIO) -> None:
    for problem in problems:
        label = "" if problem.severity == "error" else f"{problem.severity}: "
        print(f"{label}{problem}", file=out)


def run(args: argparse.Namespace) -> int:
    from gateway.catalog import Catalog
    from gateway.errors import ConfigError
    from gateway.loading import load_checked

    catalog = Catalog.builtin()
    as_json = getattr(args, "json", False)
    strict = getattr(args, "strict", False)
    try:
        config = load_checked(args.config, catalog=catalog, offline=getattr(args, "offline", False))
    except ConfigError as err:
        if as_json:
            print(json.dumps(_json(None, err.problems, 0, len(catalog)), indent=2))
            return 1
        errors = [p for p in err.problems if p.severity == "error"]
        _print(errors, sys.stdout)
        _print([p for p in err.problems if p.severity != "error"], sys.stdout)
        print(f"{_plural(len(errors), 'problem')} found", file=sys.stderr)
        return 1
    failed = strict and bool(config.warnings)
    if as_json:
        body = _json(config, config.problems, len(config.acknowledged), len(catalog))
        body["ok"] = not failed
        print(json.dumps(body, indent=2))
        return 1 if failed else 0
    summary(config, len(catalog), sys.stdout)
    shown = [*config.warnings, *config.notes]
    if shown or config.acknowledged:
        print()
    _print(shown, sys.stdout)
    if config.acknowledged:
        print(f"({_plural(len(config.acknowledged), 'acknowledged warning')} not shown)")
    if failed:
        n = len(config.warnings)
        print(f"{_plural(n, 'warning')} (--strict: warnings fail the check)", file=sys.stderr)
        return 1
    if getattr(args, "probe", False):
        from gateway.tokens import probe

        print()
        results = probe(config)
        for result in results:
            print(result.line())
        failed = any(not r.ok for r in results)
        state = config.gateway.state
        if state.backend == "redis":
            from gateway.state import probe_state

            ok, detail = probe_state(state)
            print(f"state redis: {'ok' if ok else 'FAILED (state_unavailable)'}: {detail}")
            failed = failed or not ok
        if failed:
            return 1
    return 0
