"""schemas/*.schema.json: generated from the config model, committed, and true of the examples."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.config import schema

REPO = Path(__file__).resolve().parents[2]
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.M)


class _EditorLoader(yaml.SafeLoader):
    """YAML as an editor's language server reads it: 2027-06-30 is a string, not a date."""


_EditorLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_EditorLoader)  # noqa: S506 - a SafeLoader


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    document = json.loads((REPO / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document)


EXAMPLES = [
    ("gateway.yaml", "gateway.schema.json"),
    *(
        (str(p.relative_to(REPO)), "policy.schema.json")
        for p in REPO.glob("policies/clients/*.yaml")
    ),
    *(
        (str(p.relative_to(REPO)), "policy-test.schema.json")
        for p in REPO.glob("policies/tests/*.yaml")
    ),
]


def test_committed_schemas_are_the_generated_ones() -> None:
    stale = schema.stale()
    assert not stale, (
        f"schemas/{', schemas/'.join(stale)} out of date with the config model: "
        f"run `{schema.REGENERATE}` and commit the result"
    )


@pytest.mark.parametrize(("example", "schema_file"), EXAMPLES, ids=[e for e, _ in EXAMPLES])
def test_every_shipped_example_names_its_schema_and_validates(
    example: str, schema_file: str
) -> None:
    path = REPO / example
    found = MODELINE.search(path.read_text())
    assert found, f"{example}: no '# yaml-language-server: $schema=...' line"
    assert (path.parent / found[1]).resolve() == REPO / "schemas" / schema_file
    errors = [e.message for e in _validator(schema_file).iter_errors(_load(path))]
    assert errors == []


def test_the_examples_are_all_there() -> None:
    assert len(EXAMPLES) >= 5  # gateway.yaml, three policy files, the test example


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        ({"listen": {"port": "${PORT}"}}, True),  # a whole number once substituted
        ({"listen": {"port": "${PORT:-8080}"}}, True),
        ({"listen": {"port": "eighty"}}, False),
        ({"listen": {"port": 70000}}, False),
        ({"listen": {"prot": 8080}}, False),  # unknown keys are errors, as in the loader
        ({"limits": {"max_body_bytes": None}}, True),
        ({"credentials": {"a": {"type": "pat", "pat": "${ADO_PAT}"}}}, True),
        ({"credentials": {"a": {"type": "patt", "pat": "x"}}}, False),
        ({"upstream": {"trust_me": True}}, False),
    ],
)
def test_gateway_schema_accepts_env_references_where_the_loader_substitutes(
    document: dict[str, Any], valid: bool
) -> None:
    assert _validator("gateway.schema.json").is_valid(document) is valid


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        ({"clients": [{"name": "a", "credential": "c", "mode": "report"}]}, True),
        ({"clients": [{"name": "a", "credential": "c", "mode": "${MODE}"}]}, True),
        ({"clients": [{"name": "a", "credential": "c", "mode": "reporting"}]}, False),
        ({"clients": [{"name": "a"}]}, False),  # credential is required
        ({"clients": [{"name": "a", "credential": "c", "acknowledge": ["x"]}]}, True),
        ({"routes": [{"name": "r", "match": {"path": "/x"}, "deny": True}]}, True),
    ],
)
def test_policy_schema(document: dict[str, Any], valid: bool) -> None:
    assert _validator("policy.schema.json").is_valid(document) is valid


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        ({"tests": [{"name": "t", "client": "a", "request": "GET /", "expect": "allow"}]}, True),
        (
            {
                "tests": [
                    {
                        "name": "t",
                        "entra": {"appid": "x", "groups": ["g"]},
                        "request": "GET /",
                        "expect": {"decision": "deny", "reason": "missing_scope"},
                    }
                ]
            },
            True,
        ),
        ({"tests": [{"name": "t", "client": "a", "request": "GET /", "expect": "maybe"}]}, False),
        ({"tests": []}, False),
        (
            {
                "tests": [
                    {
                        "name": "t",
                        "client": "a",
                        "request": "GET /",
                        "expect": {"decision": "deny", "reason": "missing_scop"},
                    }
                ]
            },
            False,
        ),
    ],
)
def test_policy_test_schema(document: dict[str, Any], valid: bool) -> None:
    assert _validator("policy-test.schema.json").is_valid(document) is valid


def test_check_mode_says_how_to_regenerate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 1
    assert f"run: {schema.REGENERATE}" in capsys.readouterr().err
    assert schema.main(["--write", "--dir", str(tmp_path)]) == 0
    assert schema.main(["--check", "--dir", str(tmp_path)]) == 0
