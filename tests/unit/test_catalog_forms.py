"""Optional path segments: every form of every operation, from the committed catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.catalog import Catalog
from gateway.catalog import build as catalog_build
from gateway.catalog.forms import forms, resolve, shape
from gateway.catalog.load import CatalogError, operations_from

REPO = Path(__file__).resolve().parents[2]
COMMITTED = yaml.safe_load((REPO / "policies/azure-devops/operations.yaml").read_text())


def _value(name: str) -> str:
    return f"v{len(name)}x"  # never a literal of any template


def _instantiate(template: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: _value(m.group(1)), template).rstrip("/") or "/"


def _cases() -> list[Any]:
    out = []
    for row in COMMITTED["operations"]:
        for template in (row["path"], *row.get("forms", ())):
            out.append(pytest.param(row, template, id=f"{row['host']}-{row['method']}-{template}"))
    return out


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.builtin()


@pytest.mark.parametrize(("row", "template"), _cases())
def test_every_form_of_every_operation_matches_it(
    catalog: Catalog, row: dict[str, Any], template: str
) -> None:
    path = _instantiate(template)
    for host in ("main", "vsrm") if row["host"] == "*" else (row["host"],):
        m = catalog.match(host, row["method"], path)
        assert m is not None, (host, row["method"], path)
        assert (m.operation.id, list(m.operation.scopes)) == (row["id"], row["scopes"])
        assert m.operation.template == template
        omits = set(re.findall(r"\{([^}]+)\}", row["path"])) - set(
            re.findall(r"\{([^}]+)\}", template)
        )
        assert set(m.operation.omits) == omits
        if "project" in omits:
            assert m.project is None
        if "organization" in omits:
            assert m.organization is None


def test_the_catalog_counts_its_forms(catalog: Catalog) -> None:
    rows = COMMITTED["operations"]
    assert COMMITTED["source"]["operations"] == len(rows) == 1086
    assert COMMITTED["source"]["forms"] == sum(len(r.get("forms", ())) for r in rows) == 372
    generated = [op for op in catalog if not op.note]
    assert len(generated) == 1086 + 372
    assert sum(1 for op in generated if op.omits) == 372


def test_collisions_go_to_the_operation_that_took_the_path(catalog: Catalog) -> None:
    for c in COMMITTED["collisions"]:  # the committed specifications produce none
        m = catalog.match(c["host"], c["method"], _instantiate(c["form"]))
        assert m is not None and m.operation.id == c["taken_by"], c


@pytest.mark.parametrize(
    ("method", "path", "query", "op_id", "project"),
    [
        ("GET", "/fabrikam/_apis/git/repositories", "", "git.Repositories_List", None),
        ("POST", "/fabrikam/_apis/wit/wiql", "", "wit.Wiql_QueryByWiql", None),
        (
            "POST",
            "/fabrikam/Fabrikam-Fiber/_apis/wit/wiql",
            "",
            "wit.Wiql_QueryByWiql",
            "Fabrikam-Fiber",
        ),
        (
            "POST",
            "/fabrikam/Fabrikam-Fiber/Web/_apis/wit/wiql",
            "",
            "wit.Wiql_QueryByWiql",
            "Fabrikam-Fiber",
        ),
        ("GET", "/fabrikam/_apis/wit/workitems", "ids=1,2", "wit.WorkItems_List", None),
        (
            "GET",
            "/fabrikam/Fabrikam-Fiber/_apis/build/folders",
            "",
            "build.Folders_List",
            "Fabrikam-Fiber",
        ),
    ],
)
def test_calls_real_clients_make_without_optional_segments(
    catalog: Catalog, method: str, path: str, query: str, op_id: str, project: str | None
) -> None:
    m = catalog.match("main", method, path, query)
    assert m is not None and m.operation.id == op_id
    assert (m.organization, m.project) == ("fabrikam", project)


def test_a_team_alone_is_read_as_the_project() -> None:
    # Azure DevOps binds route values by position: /{o}/{x}/_apis/wit/wiql is the project
    got = forms("/{organization}/{project}/{team}/_apis/wit/wiql", ["project", "team"])
    assert got == [
        ("/{organization}/{project}/_apis/wit/wiql", ("team",)),
        ("/{organization}/_apis/wit/wiql", ("project", "team")),
    ]
    assert forms("/{o}/_apis/npm/@{scope}/x", ["scope"]) == []  # not a whole segment
    assert forms("/{o}/_apis/x", ["missing"]) == []
    with pytest.raises(ValueError, match="more than 4 optional"):
        forms("/{a}/{b}/{c}/{d}/{e}", list("abcde"))
    assert shape("/{organization}/_APIS/npm/@{scope}") == ("{}", "_apis", "npm", "@{}")


class _Op:
    def __init__(self, oid: str, path: str, optional: list[str], host: str = "main") -> None:
        self.id, self.area, self.host, self.method, self.path = oid, oid[0], host, "GET", path
        self.forms = forms(path, optional)


def test_collisions_prefer_full_templates_then_fewer_left_out_then_the_order() -> None:
    full = _Op("a.Full", "/{o}/_apis/x", [])
    near = _Op("b.Near", "/{o}/{p}/_apis/x", ["p"])
    far = _Op("a.Far", "/{o}/{p}/{t}/_apis/y", ["p", "t"])
    far2 = _Op("c.Far", "/{o}/{p}/{t}/_apis/y", ["p", "t"], host="*")
    other = _Op("d.Other", "/{o}/{q}/_apis/y", ["q"], host="vsrm")
    ops = [full, near, far, far2, other]
    collisions = resolve(ops)
    assert near.forms == []  # /{o}/_apis/x is a.Full's own template
    assert far.forms == [("/{o}/{p}/_apis/y", ("t",)), ("/{o}/_apis/y", ("p", "t"))]
    assert far2.forms == []  # the same forms as a.Far, sorted after it
    assert other.forms == [("/{o}/_apis/y", ("q",))]  # another host: no collision
    assert [(c.of, c.form, c.taken_by) for c in collisions] == [
        ("b.Near", "/{o}/_apis/x", "a.Full"),
        ("c.Far", "/{o}/_apis/y", "d.Other"),  # on vsrm; a form of an every-host
        ("c.Far", "/{o}/{p}/_apis/y", "d.Other"),  # operation that collides anywhere is not kept
    ]
    assert [c.host for c in collisions] == ["main", "vsrm", "vsrm"]
    assert "fewer segments" in collisions[1].line() and "full template" in collisions[2].line()
    assert "its full template" in collisions[0].line()
    assert (
        resolve([_Op("b.X", "/{o}/{p}/_apis/z", ["p"]), _Op("a.Y", "/{o}/_apis/{z}/q", [])]) == []
    )


def test_forms_are_checked_when_loaded() -> None:
    row = {"id": "x.Y", "method": "GET", "path": "/{o}/{p}/_apis/x", "forms": ["/{o}/_apis/x"]}
    ops = operations_from([row], "e")
    assert [(op.template, op.omits) for op in ops] == [
        ("/{o}/{p}/_apis/x", ()),
        ("/{o}/_apis/x", ("p",)),
    ]
    for bad in ("/{o}/_apis/y", "/{o}/{p}/_apis/x", "/{o}/{p}", "/_apis/x/{o}"):
        with pytest.raises(CatalogError, match="is not"):
            operations_from([{**row, "forms": [bad]}], "e")


def test_generator_writes_forms_and_lists_collisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    optional = {"in": "path", "name": "project", "required": True, "x-ms-required": False}
    spec = {
        "host": "dev.azure.com",
        "parameters": {"project": optional},
        "paths": {
            "/{organization}/{project}/_apis/things": {
                "get": {
                    "operationId": "Things_List",
                    "parameters": [{"$ref": "#/parameters/project"}],
                    "security": [{"oauth2": ["vso.code"]}],
                }
            },
            "/{organization}/{project}/_apis/stuff": {
                "get": {
                    "operationId": "Stuff_List",
                    "parameters": [optional],
                    "security": [{"oauth2": ["vso.code"]}],
                }
            },
            "/{organization}/_apis/stuff": {
                "get": {"operationId": "OrgStuff_List", "security": [{"oauth2": ["vso.work"]}]}
            },
        },
    }
    (tmp_path / "specs/core/7.2").mkdir(parents=True)
    (tmp_path / "specs/core/7.2/core.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    args = [str(tmp_path / "specs"), "--out", str(out), "--commit", "abc1234"]
    assert catalog_build.main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "collision: GET /{organization}/_apis/stuff (host main; core.Stuff_List without "
        "project) is core.OrgStuff_List: its full template" in printed
    )
    assert "1 more forms without optional segments (1 not kept: collisions)" in printed
    cat = Catalog.load(out)
    m = cat.match("main", "GET", "/o/_apis/things")
    assert m is not None and m.operation.id == "core.Things_List" and m.project is None
    m = cat.match("main", "GET", "/o/_apis/stuff")
    assert m is not None and m.operation.id == "core.OrgStuff_List"
    doc = yaml.safe_load((out / "operations.yaml").read_text())
    assert doc["source"]["forms"] == 1
    assert doc["collisions"] == [
        {
            "host": "main",
            "method": "GET",
            "form": "/{organization}/_apis/stuff",
            "of": "core.Stuff_List",
            "omits": ["project"],
            "taken_by": "core.OrgStuff_List",
            "why": "its full template",
        }
    ]
