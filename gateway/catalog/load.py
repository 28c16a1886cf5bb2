"""Read the catalog files: generated operations and scopes, plus the hand-written extras.

The catalog ships inside the wheel as `gateway/catalog/data/`; in a source
checkout (editable installs, tests) it is the repository's `policies/azure-devops/`.
An operation row may list `forms`: the same operation at templates that leave out
some of its `{parameter}` segments; each becomes an Operation with `omits` set.
Rejects (CatalogError) a file that is missing or an entry that is malformed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.catalog.forms import shape
from gateway.catalog.scopes import Scope
from gateway.catalog.trie import TemplateError, parse_template
from gateway.errors import REASONS
from gateway.types import Operation

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class CatalogError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class CatalogFiles:
    operations: tuple[Operation, ...]
    scopes: tuple[Scope, ...]
    source: str  # the specifications commit the catalog was generated from


def data_dir() -> Path:
    """Where the built-in catalog lives: in the package, else in the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "data", here.parents[1] / "policies" / "azure-devops"):
        if (candidate / "operations.yaml").is_file():
            return candidate
    raise CatalogError(
        f"built-in catalog not found (looked in {here / 'data'} and "
        f"{here.parents[1] / 'policies' / 'azure-devops'})"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except (OSError, yaml.YAMLError) as err:
        raise CatalogError(f"{path}: {err}") from None
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: expected a mapping at the top")
    return doc


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise CatalogError(f"{where}: expected a string or a list of strings")


def omitted(template: str, form: str) -> tuple[str, ...] | None:
    """The parameters `form` leaves out of `template`; None if it is not such a form."""
    full, short = template.strip("/").split("/"), form.strip("/").split("/")
    if form == "/":
        short = []
    left_out: list[str] = []
    i = 0
    for seg in full:
        if i < len(short) and short[i] == seg:
            i += 1
        elif seg.startswith("{") and seg.endswith("}"):
            left_out.append(seg[1:-1])
        else:
            return None
    return tuple(left_out) if i == len(short) and left_out else None


def operations_from(rows: Iterable[Mapping[str, Any]], where: str) -> list[Operation]:
    out: list[Operation] = []
    for n, row in enumerate(rows):
        at = f"{where}: operations[{n}]"
        try:
            oid, path = str(row["id"]), str(row["path"])
        except (KeyError, TypeError):
            raise CatalogError(f"{at}: needs id and path") from None
        try:
            parse_template(path)
        except TemplateError as err:
            raise CatalogError(f"{at} ({oid}): {err}") from None
        deny = row.get("deny")
        if deny is not None and deny not in REASONS:
            raise CatalogError(f"{at} ({oid}): unknown deny reason {deny!r}")
        query = row.get("query") or {}
        if not isinstance(query, dict):
            raise CatalogError(f"{at} ({oid}): query must map parameter names to values")
        body = row.get("body") or {}
        if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
            raise CatalogError(f"{at} ({oid}): body must map JSON field names to text values")
        methods = _strings(row.get("method"), at)
        if not methods or any(m.upper() not in _METHODS for m in methods):
            raise CatalogError(f"{at} ({oid}): method must be among {sorted(_METHODS)}")
        templates: list[tuple[str, tuple[str, ...]]] = [(path, ())]
        for form in _strings(row.get("forms"), at):
            omits = omitted(path, form)
            if omits is None:
                raise CatalogError(
                    f"{at} ({oid}): form {form!r} is not {path!r} without some of its "
                    "{parameter} segments"
                )
            templates.append((form, omits))
        for method in methods:
            for template, omits in templates:
                out.append(
                    Operation(
                        id=oid,
                        area=str(row.get("area") or oid.partition(".")[0]),
                        host=str(row.get("host") or "main"),
                        method=method.upper(),
                        template=template,
                        scopes=_strings(row.get("scopes"), at),
                        public=bool(row.get("public", False)),
                        deny_reason=deny,
                        note=str(row.get("note") or ""),
                        query=tuple(sorted((str(k).lower(), str(v)) for k, v in query.items())),
                        omits=omits,
                        body=tuple(sorted((str(k), v) for k, v in body.items())),
                    )
                )
    return out


def scopes_from(rows: Iterable[Mapping[str, Any]], where: str) -> list[Scope]:
    out: list[Scope] = []
    for n, row in enumerate(rows):
        try:
            out.append(
                Scope(
                    name=str(row["name"]),
                    description=str(row.get("description") or ""),
                    category=str(row.get("category") or ""),
                    title=str(row.get("title") or ""),
                    high_privilege=bool(row.get("high_privilege", False)),
                    includes=_strings(row.get("includes"), f"{where}: scopes[{n}]"),
                )
            )
        except (KeyError, TypeError):
            raise CatalogError(f"{where}: scopes[{n}]: needs a name") from None
    return out


_Key = tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


def _key(op: Operation) -> _Key:
    # templates that match the same paths are one entry, whatever their parameters are called
    return (op.host, op.method, shape(op.template), op.query, op.body)


def read_catalog(directory: Path | None = None) -> CatalogFiles:
    """Generated operations, with hand-written extras replacing or adding entries."""
    directory = directory or data_dir()
    ops_doc = _read(directory / "operations.yaml")
    scopes_doc = _read(directory / "scopes.yaml")
    extras_path = directory / "extras.yaml"
    extras_doc = _read(extras_path) if extras_path.is_file() else {}
    merged: dict[_Key, Operation] = {}
    for op in operations_from(ops_doc.get("operations") or [], str(directory / "operations.yaml")):
        merged[_key(op)] = op
    for op in operations_from(extras_doc.get("operations") or [], str(extras_path)):
        merged[_key(op)] = op
    source = ops_doc.get("source") or {}
    return CatalogFiles(
        operations=tuple(merged.values()),
        scopes=tuple(scopes_from(scopes_doc.get("scopes") or [], str(directory / "scopes.yaml"))),
        source=str(source.get("commit", "")) if isinstance(source, dict) else "",
    )
