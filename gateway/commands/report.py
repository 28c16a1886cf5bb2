"""`azdo-gateway report`: least privilege from the audit trail.

Reads audit lines (files, or "-" for stdin) and prints, per client: the scopes
it is granted (from the configuration), the scopes its allowed traffic needed,
its denials by reason, its would-be denials (`gateway.commands.report_denials`:
reason, method, path shape, and the grant or route rule that would allow them),
and the smallest grant that would have allowed all of its allowed traffic, as
policy YAML ready to paste, with the route rules the calls no operation matches
would need. Traffic a client in `mode: report` made counts as allowed: that is
what report mode is for; what it would have been denied is listed all the same.

"Smallest" uses the catalog's scope inclusion: the grant whose scopes
together include the fewest scopes, then the fewest high-privilege ones, then
the fewest entries; a scope another recommended scope already includes is
left out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gateway.commands import report_denials

HELP = "least-privilege report per client from the audit trail"
UNAUTHENTICATED = "(unauthenticated)"
_RELATIVE = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
EXHAUSTIVE_MAX = 14  # candidate scopes beyond this: greedy instead of exhaustive search


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--audit",
        action="append",
        required=True,
        metavar="FILE",
        help="audit file (JSON lines); repeat for rotated files; '-' is stdin",
    )
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help="gateway.yaml, for the scopes each client is granted "
        "(default: ./gateway.yaml if present)",
    )
    p.add_argument(
        "--since",
        type=_since,
        default=None,
        metavar="WHEN",
        help="only lines at or after WHEN: an ISO date/time or 30m, 24h, 7d, 2w ago",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def _since(value: str) -> dt.datetime:
    m = _RELATIVE.match(value.strip())
    if m:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(m[1]) * _UNITS[m[2]])
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date/time (2026-11-01, 2026-11-01T08:00Z) or 30m/24h/7d/2w, "
            f"got {value!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@dataclass
class Usage:
    """What one client did in the audit period."""

    name: str
    requests: int = 0
    allowed: int = 0
    report_only: int = 0
    denials: Counter[str] = field(default_factory=Counter)
    missing: Counter[str] = field(default_factory=Counter)  # operations denied for scope
    needs: dict[frozenset[str], Counter[str]] = field(default_factory=dict)  # any-of -> ops
    would_deny: dict[tuple[str, ...], report_denials.Denial] = field(default_factory=dict)
    first: str | None = None
    last: str | None = None


def read_lines(
    sources: Iterable[IO[str]], since: dt.datetime | None, skipped: list[str]
) -> Iterator[dict[str, Any]]:
    for src in sources:
        for n, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                when = dt.datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError):
                skipped.append(f"{getattr(src, 'name', '-')}:{n}")
                continue
            if since is None or when >= since:
                yield entry


def collect(entries: Iterable[dict[str, Any]]) -> dict[str, Usage]:
    usage: dict[str, Usage] = {}
    for e in entries:
        if e.get("kind", "request") != "request":  # the gateway's own calls (project lookups)
            continue
        name = e.get("client") or UNAUTHENTICATED
        u = usage.setdefault(name, Usage(name))
        u.requests += 1
        u.first = u.first or e.get("time")
        u.last = e.get("time")
        op = e.get("operation") or "(no operation)"
        if e.get("decision") == "allow":
            u.allowed += 1
            if e.get("reportOnly"):
                u.report_only += 1
            scopes = frozenset(e.get("requiredScopes") or ())
            if scopes:
                u.needs.setdefault(scopes, Counter())[op] += 1
        elif e.get("decision") == "deny" or e.get("reason"):
            reason = e.get("reason") or "unknown"
            u.denials[reason] += 1
            if reason == "missing_scope":
                u.missing[op] += 1
        report_denials.add(u.would_deny, e)
    return usage


class Inclusion:
    """Scope inclusion from the catalog (`vso.code_write` includes `vso.code`)."""

    def __init__(self) -> None:
        from gateway.catalog import Catalog

        self.scopes = Catalog.builtin().scopes

    def includes(self, scope: str) -> frozenset[str]:
        return self.scopes.includes(scope)

    def closure(self, grant: Iterable[str]) -> frozenset[str]:
        return self.scopes.closure(grant)

    def high(self, scope: str) -> bool:
        return self.scopes.high_privilege(scope)


def smallest_grant(needs: Iterable[frozenset[str]], inc: Inclusion) -> list[str]:
    """The least-privilege set of scopes satisfying every any-of requirement."""
    reqs = [r for r in set(needs) if r]
    # A scope wider than every option of a requirement only adds privilege, so the
    # options themselves are the only candidates.
    chosen = {next(iter(r)) for r in reqs if len(r) == 1}
    held = inc.closure(chosen)
    open_reqs = [r for r in reqs if not (r & held)]
    candidates = sorted(set().union(*open_reqs)) if open_reqs else []

    def cost(grant: Iterable[str]) -> tuple[int, int, int]:
        grant = set(grant)
        return (len(inc.closure(grant)), sum(inc.high(s) for s in grant), len(grant))

    def covers(extra: Iterable[str]) -> bool:
        have = inc.closure(chosen | set(extra))
        return all(r & have for r in open_reqs)

    best: set[str] = set()
    if open_reqs and len(candidates) <= EXHAUSTIVE_MAX:
        options = (
            set(c)
            for k in range(1, len(candidates) + 1)
            for c in itertools.combinations(candidates, k)
            if covers(c)
        )
        best = min(options, key=lambda c: cost(chosen | c))
    elif open_reqs:  # greedy: most requirements newly met per unit of privilege
        while not covers(best):
            have = inc.closure(chosen | best)
            best.add(
                max(
                    candidates,
                    key=lambda s: (
                        sum(1 for r in open_reqs if not r & have and r & inc.includes(s)),
                        -len(inc.includes(s)),
                    ),
                )
            )
    grant = chosen | best
    return sorted(s for s in grant if not any(s in inc.includes(o) for o in grant if o != s))


def _granted(config_path: str | None) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Scopes and mode per configured client; ({}, {}) when there is no config."""
    from gateway.config.load import load

    path = config_path or ("gateway.yaml" if Path("gateway.yaml").exists() else None)
    if path is None:
        return {}, {}
    config = load(path)
    return ({c.name: c.scopes for c in config.clients}, {c.name: c.mode for c in config.clients})


def analyse(
    usage: dict[str, Usage], granted: dict[str, tuple[str, ...]], inc: Inclusion
) -> list[dict[str, Any]]:
    out = []
    rule_names: set[str] = set()
    for name in sorted(set(usage) | set(granted)):
        u = usage.get(name, Usage(name))
        needed = smallest_grant(u.needs, inc) if name != UNAUTHENTICATED else []
        grant = granted.get(name)
        entry: dict[str, Any] = {
            "client": name,
            "requests": u.requests,
            "allowed": u.allowed,
            "reportOnlyAllowed": u.report_only,
            "denied": dict(u.denials.most_common()),
            "deniedForMissingScope": dict(u.missing.most_common()),
            "needed": [
                {"anyOf": sorted(r), "operations": dict(ops.most_common())}
                for r, ops in sorted(u.needs.items(), key=lambda kv: sorted(kv[0]))
            ],
            "granted": list(grant) if grant is not None else None,
            "recommended": needed if name != UNAUTHENTICATED else None,
            "wouldBeDenied": report_denials.summarize(name, u.would_deny.values(), rule_names)
            if name != UNAUTHENTICATED
            else [],
            "first": u.first,
            "last": u.last,
        }
        if grant is not None:
            have = inc.closure(grant)
            entry["unused"] = sorted(
                s for s in grant if not any(r & inc.includes(s) for r in u.needs)
            )
            entry["beyondNeed"] = sorted(have - inc.closure(needed))
            entry["wouldNotCover"] = sorted({s for r in u.needs if not r & have for s in r})
        out.append(entry)
    return out


def _yaml_list(items: Iterable[str]) -> str:
    return (
        "["
        + ", ".join(json.dumps(s) if not re.fullmatch(r"[\w.-]+", s) else s for s in items)
        + "]"
    )


def render_yaml(report: list[dict[str, Any]], header: list[str]) -> str:
    lines = [f"# {h}" for h in header] + ["clients:"]
    for e in report:
        if e["client"] == UNAUTHENTICATED:
            continue
        lines.append(
            f"  # --- {e['client']}: {e['requests']} requests, {e['allowed']} allowed"
            + (f" ({e['reportOnlyAllowed']} only by report mode)" if e["reportOnlyAllowed"] else "")
        )
        if e["denied"]:
            lines.append("  # denied: " + ", ".join(f"{r} {n}" for r, n in e["denied"].items()))
        for op, n in list(e["deniedForMissingScope"].items())[:5]:
            lines.append(f"  #   missing scope for {op} ({n}x)")
        for need in e["needed"]:
            ops = ", ".join(f"{op} {n}x" for op, n in list(need["operations"].items())[:3])
            lines.append(f"  # needed {' or '.join(need['anyOf'])}: {ops}")
        if e["granted"] is None:
            lines.append("  # granted: (client not in the configuration)")
        else:
            lines.append(f"  # granted: {_yaml_list(e['granted'])}")
            if e["unused"]:
                lines.append(f"  # unused grants: {_yaml_list(e['unused'])}")
            if e["wouldNotCover"]:
                lines.append(
                    "  # NOTE: allowed traffic needed scopes the grant lacks (report "
                    f"mode): {_yaml_list(e['wouldNotCover'])}"
                )
        lines.extend(report_denials.render(e["wouldBeDenied"]))
        if not e["requests"]:
            lines.append("  # no traffic in this period: consider removing the client")
        lines.append(f"  - name: {e['client']}")
        lines.append(f"    scopes: {_yaml_list(e['recommended'])}")
    rules = [d["routeRule"] for e in report for d in e["wouldBeDenied"] if d["routeRule"]]
    if rules:
        lines.append("# Route rules for the calls no catalog operation covers: each allows the one")
        lines.append("# shape seen, for the one client; review them before pasting.")
        lines.append("routes:")
        for rule in rules:
            match = ", ".join(f"{k}: {json.dumps(v)}" for k, v in rule["match"].items())
            lines += [
                f"  - name: {rule['name']}",
                f"    match: {{{match}}}",
                "    allow: true",
                f"    clients: {_yaml_list(rule['clients'])}",
            ]
    unauth = next((e for e in report if e["client"] == UNAUTHENTICATED), None)
    if unauth:
        lines.append(
            f"# unauthenticated requests: {unauth['requests']} ("
            + ", ".join(f"{r} {n}" for r, n in unauth["denied"].items())
            + ")"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError

    try:
        granted, _ = _granted(args.config)
    except ConfigError as err:
        for problem in err.errors:
            print(problem, file=sys.stderr)
        return 1
    skipped: list[str] = []
    handles: list[IO[str]] = []
    try:
        for name in args.audit:
            handles.append(sys.stdin if name == "-" else open(name, encoding="utf-8"))
        usage = collect(read_lines(handles, args.since, skipped))
    except OSError as err:
        print(f"azdo-gateway report: cannot read {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    finally:
        for h in handles:
            if h is not sys.stdin:
                h.close()
    if skipped:
        print(
            f"azdo-gateway report: skipped {len(skipped)} lines that are not audit records "
            f"(first: {skipped[0]})",
            file=sys.stderr,
        )
    report = analyse(usage, granted, Inclusion())
    if args.json:
        print(
            json.dumps(
                {"since": args.since.isoformat() if args.since else None, "clients": report},
                indent=2,
            )
        )
        return 0
    header = [
        "azdo-gateway report from "
        + ", ".join(args.audit)
        + (f" since {args.since.isoformat(timespec='minutes')}" if args.since else ""),
        "Recommended grants: the smallest set of scopes that allows all the allowed",
        "traffic seen. Paste each client's `scopes` into its policy file.",
    ]
    sys.stdout.write(render_yaml(report, header))
    return 0
