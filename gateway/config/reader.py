"""Read one YAML file into plain data, keeping the line of every element.

Takes a path and the environment; returns a `Document`: the data (dicts, lists
and scalars), the line of each element by path, which values came from the
environment, and every problem found. Rejects unreadable files, non-UTF-8
text, YAML syntax errors (with their line), duplicate keys, non-scalar keys
and unknown tags.

`${VAR}` and `${VAR:-default}` (default when unset or empty) and `${VAR-default}`
(default when unset) are substituted into the parsed string scalars, never into
the raw text, so a value containing `: ` or a newline cannot change the
document's structure. `$$` is a literal `$`. A variable that is not set and has
no default is a problem naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.sources import PathKey, Problem, Severity, format_key

_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Document:
    file: str  # display name
    data: Any = None  # None: empty or unusable
    empty: bool = False  # the file holds no document (or only comments)
    lines: dict[PathKey, int] = field(default_factory=dict)
    from_env: dict[PathKey, tuple[str, ...]] = field(default_factory=dict)  # values with ${VAR}s
    unresolved: set[PathKey] = field(default_factory=set)  # values whose ${VAR} failed
    problems: list[Problem] = field(default_factory=list)

    def problem(
        self,
        path: PathKey,
        message: str,
        line: int | None = None,
        *,
        code: str = "invalid",
        severity: Severity = "error",
    ) -> None:
        if line is None:
            line = self.lines.get(path)
        key = format_key(path) if path else ""
        self.problems.append(Problem(self.file, line, key, message, severity, code))


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, list[tuple[str, str]], list[str]]:
    """Expand `${VAR}` references in `text`.

    Returns the result, the problems as (code, message), and the names used.
    Code `env_unset`: a variable is not set and has no default; `env_reference`:
    the reference itself is malformed.
    """
    out: list[str] = []
    problems: list[tuple[str, str]] = []
    names: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        nxt = text[j + 1 : j + 2]
        if nxt == "$":
            out.append("$")
            i = j + 2
            continue
        if nxt != "{":
            out.append("$")
            i = j + 1
            continue
        end = text.find("}", j + 2)
        if end < 0:
            problems.append(("env_reference", "unterminated '${' (write '$$' for a literal '$')"))
            out.append(text[j:])
            break
        ref = text[j + 2 : end]
        i = end + 1
        name, op, default = _split_ref(ref)
        if not _NAME.match(name):
            message = (
                f"invalid variable reference '${{{ref}}}' "
                "(expected ${NAME}, ${NAME:-default} or ${NAME-default})"
            )
            problems.append(("env_reference", message))
            continue
        names.append(name)
        value = env.get(name)
        if op == ":-" and not value:
            value = default
        elif op == "-" and value is None:
            value = default
        if value is None:
            message = (
                f"environment variable {name} is not set "
                f"(set it, or give a default: ${{{name}:-default}})"
            )
            problems.append(("env_unset", message))
            continue
        out.append(value)
    return "".join(out), problems, names


def _split_ref(ref: str) -> tuple[str, str, str]:
    for op in (":-", "-"):
        name, sep, default = ref.partition(op)
        if sep and _NAME.match(name):
            return name, op, default
    return ref, "", ""


class _Builder:
    def __init__(self, doc: Document, env: Mapping[str, str], offline: bool) -> None:
        self.doc = doc
        self.env = env
        self.offline = offline
        self.constructor = SafeConstructor()
        self.active: set[int] = set()

    def build(self, node: Node, path: PathKey) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.active:
            self.doc.problem(path, "recursive YAML alias")
            return None
        if isinstance(node, MappingNode | SequenceNode) and node.tag not in _COLLECTION_TAGS:
            self.doc.problem(path, f"unsupported YAML tag '{node.tag}'")
            self.doc.unresolved.add(path)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, ScalarNode)
            return self._scalar(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        try:
            self.constructor.flatten_mapping(node)  # `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as err:
            self.doc.problem(path, f"YAML merge error: {err.problem}")
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode):
                self.doc.problem(path, "a key must be a plain string, not a list or mapping", line)
                continue
            key = str(key_node.value)
            if key in first:
                self.doc.problem(
                    (*path, key), f"duplicate key '{key}' (first at line {first[key]})", line
                )
                continue
            first[key] = line
            self.doc.lines[(*path, key)] = line
            out[key] = self.build(value_node, (*path, key))
        return out

    def _scalar(self, node: ScalarNode, path: PathKey) -> Any:
        if node.tag == _STR_TAG and "$" in node.value:
            value, problems, names = substitute(node.value, self.env)
            if names:
                self.doc.from_env[path] = tuple(names)
            if problems:
                self.doc.unresolved.add(path)
            for code, message in problems:
                # Offline (check --offline, azdo-gateway test): where it runs, it may be set.
                severity: Severity = "note" if self.offline and code == "env_unset" else "error"
                self.doc.problem(path, message, code=code, severity=severity)
            return value
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            self.doc.problem(path, f"unsupported YAML tag '{node.tag}'")
            self.doc.unresolved.add(path)
            return None


_KEY_LINE = re.compile(r"^(?P<indent>\s*(?:-\s+)?)(?P<key>[^\s:#'\"\[{][^:#]*?)\s*:(?:\s|$)")


def _indentation(lines: list[str], err: yaml.MarkedYAMLError) -> str | None:
    """A key indented unlike its neighbour, said as a person would; None if not that.

    PyYAML reports a key indented too far as "mapping values are not allowed
    here" (the previous value runs on into it), and one indented too little as
    "expected <block end>"; both at the line to fix.
    """
    mark = err.problem_mark
    problem = err.problem or ""
    if mark is None or mark.line >= len(lines):
        return None
    if problem != "mapping values are not allowed here" and not problem.startswith(
        "expected <block end>"
    ):
        return None
    here = _KEY_LINE.match(lines[mark.line])
    if here is None:
        return None
    for n in range(mark.line - 1, -1, -1):
        stripped = lines[n].strip()
        if not stripped or stripped.startswith("#"):
            continue
        above = _KEY_LINE.match(lines[n])
        if above is None:
            return None
        col, col_above = len(here["indent"]) + 1, len(above["indent"]) + 1
        if col == col_above:
            return None
        further = "further than" if col > col_above else "less than"
        return (
            f"YAML indentation error: '{here['key']}' (column {col}) is indented {further} "
            f"'{above['key']}' on line {n + 1} (column {col_above}); line it up with "
            f"'{above['key']}': the keys of one mapping start in the same column"
        )
    return None


def read(path: Path, display: str, env: Mapping[str, str], *, offline: bool = False) -> Document:
    """Read and parse `path`; `display` is how problems name the file.

    `offline`: an environment variable that is not set is a note, not an error.
    """
    doc = Document(display)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        doc.problem((), "cannot read: is a directory, expected a YAML file")
        return doc
    except FileNotFoundError:
        doc.problem((), "cannot read: no such file")
        return doc
    except OSError as err:
        doc.problem((), f"cannot read: {(err.strerror or str(err)).lower()}")
        return doc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        doc.problem((), f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})")
        return doc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        message = f"YAML syntax error: {err.problem or err.context}"
        indentation = _indentation(text.splitlines(), err)
        if indentation:
            message = indentation
        elif err.context == "expected a single document in the stream":
            message = "YAML syntax error: a second document ('---') where one is expected"
        elif err.context and err.problem and err.context_mark is not None:
            message += f" ({err.context} at line {err.context_mark.line + 1})"
        if "'\\t'" in message:
            message += "; indent with spaces, not tabs"
        lines = text.splitlines()
        for at in {m.line for m in (err.problem_mark, err.context_mark) if m is not None}:
            if at < len(lines) and re.search(r"[\[{].*\$\{", lines[at]):
                message += "; inside [...] or {...}, put ${...} values in quotes"
                break
        doc.problem((), message, mark.line + 1 if mark is not None else None, code="yaml_syntax")
        return doc
    except yaml.YAMLError as err:
        doc.problem((), f"YAML error: {err}")
        return doc
    if root is None or (isinstance(root, ScalarNode) and root.tag.endswith(":null")):
        doc.empty = True
        return doc
    doc.data = _Builder(doc, env, offline).build(root, ())
    return doc
