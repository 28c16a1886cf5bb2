"""Reading YAML with lines kept and ${VAR} substituted into parsed scalars."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.reader import read, substitute

FORMS = " (expected ${NAME}, ${NAME:-default} or ${NAME-default})"
ENV = {"HOST": "example.org", "EMPTY": "", "TRICKY": "a: b\n- c # d"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${HOST}", "example.org"),
        ("https://${HOST}/x", "https://example.org/x"),
        ("${HOST}${HOST}", "example.orgexample.org"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # :- also replaces an empty value
        ("${EMPTY-fallback}", ""),  # - only replaces an unset one
        ("${MISSING-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a:-b}", "a:-b"),
        ("$${HOST}", "${HOST}"),  # $$ is a literal $
        ("pa$word", "pa$word"),  # a lone $ stays
        ("cost: 5$", "cost: 5$"),
        ("${TRICKY}", "a: b\n- c # d"),
    ],
)
def test_substitute(text: str, expected: str) -> None:
    value, problems, _ = substitute(text, ENV)
    assert (value, problems) == (expected, [])


def test_substitute_names_the_variables_used() -> None:
    assert substitute("${HOST}/${MISSING:-x}/$${NOT}", ENV)[2] == ["HOST", "MISSING"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "${NOPE}",
            "environment variable NOPE is not set (set it, or give a default: ${NOPE:-default})",
        ),
        ("${NOPE", "unterminated '${' (write '$$' for a literal '$')"),
        (
            "${}",
            "invalid variable reference '${}'" + FORMS,
        ),
        (
            "${1X}",
            "invalid variable reference '${1X}'" + FORMS,
        ),
        (
            "${A B}",
            "invalid variable reference '${A B}'" + FORMS,
        ),
    ],
)
def test_substitute_problems(text: str, problem: str) -> None:
    assert [m for _, m in substitute(text, ENV)[1]] == [problem]


def _read(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return read(path, "g.yaml", env or ENV)


def test_substitution_cannot_change_structure(tmp_path: Path) -> None:
    doc = _read(tmp_path, "a: ${TRICKY}\nb: [x, '${HOST}']\n")
    assert doc.data == {"a": "a: b\n- c # d", "b": ["x", "example.org"]}
    assert doc.from_env == {("a",): ("TRICKY",), ("b", 1): ("HOST",)}


def test_keys_and_non_strings_are_not_substituted(tmp_path: Path) -> None:
    doc = _read(tmp_path, "${HOST}: 1\nport: 8080\non: yes\nwhen: 2027-06-30\n")
    assert doc.data["${HOST}"] == 1
    assert doc.data["port"] == 8080
    assert doc.data["on"] is True  # keys are the text as written, never booleans
    assert str(doc.data["when"]) == "2027-06-30"


def test_lines_of_every_element(tmp_path: Path) -> None:
    doc = _read(
        tmp_path, "# c\nclients:\n  - name: a\n    scopes:\n      - x\n      - y\n  - {name: b}\n"
    )
    assert doc.lines[("clients",)] == 2
    assert doc.lines[("clients", 0)] == 3
    assert doc.lines[("clients", 0, "name")] == 3
    assert doc.lines[("clients", 0, "scopes", 1)] == 6
    assert doc.lines[("clients", 1, "name")] == 7


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    doc = _read(
        tmp_path,
        "base: &b {type: pat, user: me}\ncreds:\n  a: {<<: *b, pat: x}\n  b: *b\n",
    )
    assert doc.problems == []
    assert doc.data["creds"] == {
        "a": {"type": "pat", "user": "me", "pat": "x"},
        "b": {"type": "pat", "user": "me"},
    }


def test_recursive_alias_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    doc = _read(tmp_path, "a: &x [1, *x]\n")
    assert [str(p) for p in doc.problems] == ["g.yaml:1: a[1]: recursive YAML alias"]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read(path, "g.yaml", {}).data == {"a": 1}


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("a: 1\n")
    path.chmod(0)
    try:
        doc = read(path, "g.yaml", {})
        if doc.data == {"a": 1}:
            pytest.skip("running as a user that can read any file")
        assert [str(p) for p in doc.problems] == ["g.yaml: cannot read: permission denied"]
    finally:
        path.chmod(0o600)


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
@settings(max_examples=200, deadline=None)
def test_any_variable_value_is_taken_whole(value: str) -> None:
    """Whatever a variable holds (YAML syntax, newlines, quotes), it becomes the value."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.yaml"
        path.write_text('a: ${V}\nb: "x${V}x"\nc: ["${V:-d}"]\n- ${V}\n'.replace("- ", "d:\n  - "))
        doc = read(path, "g.yaml", {"V": value})
    assert doc.problems == []
    assert doc.data == {"a": value, "b": f"x{value}x", "c": [value or "d"], "d": [value]}
