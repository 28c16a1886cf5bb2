"""Generate the built-in catalog from the official Azure DevOps REST API specifications.

    python -m gateway.catalog.build SPEC_DIR [SCOPES_TSV] [--out policies/azure-devops]

Takes a checkout of MicrosoftDocs/vsts-rest-api-specs (`SPEC_DIR` holds
`<area>/<version>/*.json`; the newest version of every area is used) and,
optionally, the Azure DevOps scopes table (category, scope, name,
high_privilege, inherits_from). Writes `operations.yaml` (every operation on
every host, with the scopes that accept it) and `scopes.yaml` (every scope,
its description, whether it is high-privilege, and what it includes).

Operations that differ only by query string (the spec's `x-ms-paths`) are one
operation here: the gateway matches paths, and it keeps only the scopes every
variant accepts. Path segments the specs mark `"x-ms-required": false` give an
operation more forms (`forms:`, see gateway/catalog/forms.py); a form whose path
belongs to another operation is not kept, and is listed under `collisions:` and
on the standard output. Rejects specs whose host is not one of `upstream.hosts`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.catalog.forms import Collision, forms, optional_path_params, resolve
from gateway.config.model import DEFAULT_HOSTS

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
ANY_HOST = "*"  # the spec's `{service}dev.azure.com` template: served on every service host
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_SOURCE = re.compile(r"commit\s+([0-9a-f]{7,40})(?:\s+\(([^)]*)\))?", re.IGNORECASE)


class BuildError(Exception):
    pass


@dataclass
class _Op:
    id: str
    area: str
    host: str
    method: str
    path: str
    scopes: list[str]
    variants: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    forms: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (template, omits)


def host_key(spec_host: str) -> str:
    """Map a spec `host` to a key of `upstream.hosts` ("*" for the `{service}` template)."""
    if "{service}" in spec_host:
        return ANY_HOST
    for key, url in DEFAULT_HOSTS.items():
        if urlsplit(url).hostname == spec_host.lower():
            return key
    raise BuildError(
        f"spec host {spec_host!r} is not one of upstream.hosts ({', '.join(DEFAULT_HOSTS)})"
    )


def _newest_version(area_dir: Path) -> Path | None:
    versions = [p for p in area_dir.iterdir() if p.is_dir() and _VERSION.match(p.name)]
    if not versions:
        return None
    return max(versions, key=lambda p: tuple(int(x) for x in p.name.split(".")))


def spec_files(spec_dir: Path) -> list[tuple[str, Path]]:
    """(area, file) for the newest API version of every area, in a stable order."""
    root = spec_dir / "specification" if (spec_dir / "specification").is_dir() else spec_dir
    out: list[tuple[str, Path]] = []
    for area_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        newest = _newest_version(area_dir)
        if newest is not None:
            out.extend((area_dir.name, f) for f in sorted(newest.glob("*.json")))
    if not out:
        raise BuildError(f"{spec_dir}: no <area>/<version>/*.json specification files found")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    # The published files may start with a UTF-8 byte order mark.
    doc = json.loads(path.read_text(encoding="utf-8-sig"))
    if not isinstance(doc, dict):
        raise BuildError(f"{path}: not a JSON object")
    return doc


def _op_scopes(op: dict[str, Any]) -> list[str]:
    scopes: list[str] = []
    for requirement in op.get("security") or []:
        for names in requirement.values():
            scopes.extend(n for n in names if n not in scopes)
    return scopes


def _op_id(area: str, operation_id: str) -> str:
    return f"{area}.{re.sub(r'[^A-Za-z0-9_]', '', operation_id)}"


def _common(a: list[str], b: list[str]) -> list[str]:
    return [s for s in a if s in b]


@dataclass
class Specs:
    operations: list[_Op]
    descriptions: dict[str, str]  # scope -> description
    warnings: list[str]
    collisions: list[Collision]


def read_specs(spec_dir: Path) -> Specs:
    """Every operation with its forms, every scope description, warnings and collisions."""
    ops: dict[tuple[str, str, str], _Op] = {}
    descriptions: dict[str, str] = {}
    warnings: list[str] = []
    for area, path in spec_files(spec_dir):
        doc = _read_json(path)
        host = host_key(str(doc.get("host", "")))
        for sec in (doc.get("securityDefinitions") or {}).values():
            for name, text in (sec.get("scopes") or {}).items():
                descriptions.setdefault(name, " ".join(str(text).split()))
        # `paths` first, so an operation is named after its query-less form.
        for section in ("paths", "x-ms-paths"):
            for raw_path, item in (doc.get(section) or {}).items():
                template = raw_path.partition("?")[0].rstrip("/") or "/"
                for method in METHODS:
                    op = item.get(method)
                    if op is None:
                        continue
                    scopes = _op_scopes(op)
                    key = (host, method.upper(), template.lower())
                    oid = _op_id(area, str(op.get("operationId") or f"{method}{template}"))
                    optional = optional_path_params(
                        doc, item.get("parameters") or [], op.get("parameters") or []
                    )
                    try:
                        more = forms(template, optional)
                    except ValueError as err:
                        raise BuildError(f"{path}: {err}") from None
                    seen = ops.get(key)
                    if seen is None:
                        ops[key] = _Op(oid, area, host, method.upper(), template, scopes)
                        ops[key].forms = more
                        continue
                    seen.forms.extend(f for f in more if f not in seen.forms)
                    seen.variants.append(oid)
                    if set(scopes) != set(seen.scopes):
                        common = _common(seen.scopes, scopes)
                        warnings.append(
                            f"{seen.id}: query variant {oid} accepts {scopes}, "
                            f"base accepts {seen.scopes}; keeping {common}"
                        )
                        seen.scopes = common
    result = sorted(ops.values(), key=lambda o: (o.area, o.host, o.path.lower(), o.method))
    taken: dict[str, int] = {}
    for o in result:  # ids are unique: a clash gets a stable numeric suffix
        n = taken.get(o.id, 0)
        taken[o.id] = n + 1
        if n:
            o.id = f"{o.id}_{n + 1}"
    collisions = resolve(result)
    return Specs(result, descriptions, warnings, collisions)


def read_scopes_tsv(path: Path) -> dict[str, dict[str, str]]:
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split("\t")]
        if header is None:
            header = cells
            continue
        row = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=False))
        rows[row["scope"]] = row
    return rows


def _yaml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # JSON strings are valid YAML flow scalars


def _flow_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_yaml_str(i) for i in items) + "]"


def source_line(spec_dir: Path) -> str:
    for candidate in (spec_dir / "SOURCE.txt", spec_dir.parent / "SOURCE.txt"):
        if candidate.is_file():
            m = _SOURCE.search(candidate.read_text())
            if m:
                return m.group(1) + (f" ({m.group(2)})" if m.group(2) else "")
    return "unknown"


def render_operations(ops: list[_Op], commit: str, collisions: Sequence[Collision] = ()) -> str:
    lines = [
        "# Generated by `python -m gateway.catalog.build` from the official Azure DevOps",
        "# REST API specifications (MicrosoftDocs/vsts-rest-api-specs). Do not edit by hand:",
        "# add what the specifications lack to extras.yaml, and re-run the generator from the",
        "# repository root: python -m gateway.catalog.build SPEC_DIR SCOPES_TSV",
        '# host: a key of upstream.hosts ("*": the spec\'s {service}dev.azure.com template).',
        "# scopes: any one of them suffices; [] means the specification states none, and the",
        "# operation is denied unless extras.yaml or a route rule says otherwise.",
        "# forms: the same operation at the paths that leave out segments the specification",
        '# marks optional ("x-ms-required": false); collisions: forms not kept, because the',
        "# path belongs to another operation (see gateway/catalog/forms.py).",
        "source:",
        "  repository: MicrosoftDocs/vsts-rest-api-specs",
        f"  commit: {_yaml_str(commit)}",
        f"  operations: {len(ops)}",
        f"  forms: {sum(len(o.forms) for o in ops)}",
        "operations:",
    ]
    for o in ops:
        fields = [
            f"id: {_yaml_str(o.id)}",
            f"area: {_yaml_str(o.area)}",
            f"host: {_yaml_str(o.host)}",
            f"method: {o.method}",
            f"path: {_yaml_str(o.path)}",
            f"scopes: {_flow_list(o.scopes)}",
        ]
        if o.variants:
            fields.append(f"variants: {_flow_list(o.variants)}")
        if o.forms:
            fields.append(f"forms: {_flow_list(f for f, _ in o.forms)}")
        lines.append("- {" + ", ".join(fields) + "}")
    lines.append("collisions:" + ("" if collisions else " []"))
    for c in collisions:
        fields = [
            f"host: {_yaml_str(c.host)}",
            f"method: {c.method}",
            f"form: {_yaml_str(c.form)}",
            f"of: {_yaml_str(c.of)}",
            f"omits: {_flow_list(c.omits)}",
            f"taken_by: {_yaml_str(c.taken_by)}",
            f"why: {_yaml_str(c.why)}",
        ]
        lines.append("- {" + ", ".join(fields) + "}")
    return "\n".join(lines) + "\n"


def render_scopes(
    descriptions: dict[str, str], table: dict[str, dict[str, str]], commit: str
) -> str:
    lines = [
        "# Generated by `python -m gateway.catalog.build`: every Azure DevOps OAuth scope.",
        "# description: from the specifications' securityDefinitions; category, name,",
        "# high_privilege and includes: from the Azure DevOps scopes table. `includes` is the",
        "# scope this one grants too (transitively); user_impersonation grants every scope.",
        "source:",
        f"  specifications_commit: {_yaml_str(commit)}",
        "scopes:",
    ]
    for name in sorted(set(descriptions) | set(table)):
        row = table.get(name, {})
        includes = [s for s in row.get("inherits_from", "").replace(",", " ").split() if s]
        high = row.get("high_privilege", "").lower() in ("yes", "true", "1")
        if not row:  # not in the table: treat as high-privilege until the table says otherwise
            high = True
            if name.endswith("_manage") and name[: -len("_manage")] in descriptions:
                includes = [name[: -len("_manage")]]
        fields = [
            f"name: {_yaml_str(name)}",
            f"category: {_yaml_str(row.get('category', ''))}",
            f"title: {_yaml_str(row.get('name', ''))}",
            f"high_privilege: {'true' if high else 'false'}",
            f"includes: {_flow_list(includes)}",
            f"description: {_yaml_str(descriptions.get(name, ''))}",
        ]
        lines.append("- {" + ", ".join(fields) + "}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.catalog.build", description=__doc__)
    p.add_argument("spec_dir", type=Path, help="checkout of vsts-rest-api-specs")
    p.add_argument("scopes_tsv", type=Path, nargs="?", help="Azure DevOps scopes table (TSV)")
    p.add_argument("--out", type=Path, default=Path("policies/azure-devops"))
    p.add_argument("--commit", help="source commit to record (default: from SOURCE.txt)")
    args = p.parse_args(argv)
    try:
        specs = read_specs(args.spec_dir)
        table = read_scopes_tsv(args.scopes_tsv) if args.scopes_tsv else {}
    except (OSError, ValueError, BuildError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    commit = args.commit or source_line(args.spec_dir)
    ops, descriptions = specs.operations, specs.descriptions
    for w in specs.warnings:
        print(f"warning: {w}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "operations.yaml").write_text(render_operations(ops, commit, specs.collisions))
    (args.out / "scopes.yaml").write_text(render_scopes(descriptions, table, commit))
    hosts = sorted({o.host for o in ops})
    unscoped = sum(1 for o in ops if not o.scopes)
    for c in specs.collisions:
        print(f"collision: {c.line()}")
    print(
        f"{len(ops)} operations on {len(hosts)} hosts ({unscoped} state no scope), "
        f"{sum(len(o.forms) for o in ops)} more forms without optional segments "
        f"({len(specs.collisions)} not kept: collisions), "
        f"{len(set(descriptions) | set(table))} scopes -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
