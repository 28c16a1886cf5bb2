"""Load gateway.yaml and its policy files into a validated `Config`.

Takes the path of gateway.yaml (and the environment); returns a `Config`
whose `sources` can locate every element, and whose `warnings` list what is
suspicious but valid. Raises ConfigError listing every problem found, each a
typed `Problem` (`file:line: key: what is wrong (what is expected)` as text),
sorted by file and line.

Relative paths (policy globs, `*_file` keys, `audit.file`) are relative to
the directory of gateway.yaml. Policy files are read in the order of
`policies`, each glob's matches sorted by name; a file matched twice is read
once. Each client and route is validated on its own, so one broken entry does
not hide the problems of the others.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.messages import did_you_mean, problems_from
from gateway.config.model import Client, Config, GatewayConfig, Route
from gateway.config.reader import Document, read
from gateway.config.sources import PathKey, Problem, SourceMap, format_key
from gateway.config.validate import validate_all
from gateway.errors import ConfigError

_TOP_KEYS = ", ".join(GatewayConfig.model_fields)


class ConfigProblems(ConfigError):
    """ConfigError that keeps the valid part of the configuration (None if too broken).

    Later checks (the policy's, against the catalog) may still run on `partial`
    so that one run reports their problems too.
    """

    def __init__(self, problems: Sequence[Problem], partial: Config | None) -> None:
        super().__init__(problems)
        self.partial = partial


def display(path: Path | str) -> str:
    """How messages name a file: relative to the working directory when under it."""
    path = os.path.abspath(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith(os.pardir) else rel


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"the value {value!r}"


def _absolutize(data: Any, base: Path) -> Any:
    """Make relative `*_file` values (and audit.file) relative to `base`."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key.endswith("_file") and isinstance(value, str) and value:
                value = os.path.join(base, os.path.expanduser(value))
            out[key] = _absolutize(value, base)
        return out
    if isinstance(data, list):
        return [_absolutize(item, base) for item in data]
    return data


def _valid(data: dict[str, Any]) -> bool:
    try:
        GatewayConfig.model_validate(data)
    except ValidationError:
        return False
    return True


def _validate(
    model: type[BaseModel], data: Any, doc: Document, prefix: PathKey, problems: list[Problem]
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems.extend(problems_from(err, model, data, doc, prefix))
        return None


class _Loader:
    def __init__(self, path: Path, env: Mapping[str, str], offline: bool) -> None:
        self.path = path
        self.offline = offline
        self.base = path.parent.absolute()
        self.env = env
        self.problems: list[Problem] = []
        self.docs: list[Document] = []
        self.files: list[Path] = []
        self.clients: list[Client] = []
        self.routes: list[Route] = []
        self.client_src: list[tuple[str, int]] = []
        self.route_src: list[tuple[str, int]] = []
        self.broken_clients: set[str] = set()  # names of clients that failed validation
        self.broken_credentials: set[str] = set()
        self.broken_sections: set[str] = set()  # top-level keys of gateway.yaml that failed
        self.broken_files: set[str] = set()  # files that could not be read or parsed

    def read(self, path: Path) -> Document:
        doc = read(path, display(path), self.env, offline=self.offline)
        self.docs.append(doc)
        self.files.append(path)
        self.problems.extend(doc.problems)
        if doc.data is None and not doc.empty:
            self.broken_files.add(doc.file)
        return doc

    def gateway(self) -> tuple[GatewayConfig | None, list[tuple[int, str]]]:
        doc = self.read(self.path)
        if doc.empty:
            message = f"the file is empty (expected a mapping of: {_TOP_KEYS})"
            self.problems.append(Problem(doc.file, None, "", message, code="empty_file"))
        if not isinstance(doc.data, dict):
            if doc.data is not None:
                message = f"expected a mapping of: {_TOP_KEYS}; got {_kind(doc.data)}"
                self.problems.append(Problem(doc.file, doc.lines.get(()), "", message))
            return None, []
        data = _absolutize(doc.data, self.base)
        if isinstance(data.get("audit"), dict):
            audit_file = data["audit"].get("file")
            if isinstance(audit_file, str) and audit_file not in ("", "-"):
                data["audit"]["file"] = os.path.join(self.base, os.path.expanduser(audit_file))
        gw = _validate(GatewayConfig, data, doc, (), self.problems)
        if gw is None:
            gw = self.partial(data)
        raw = data.get("policies")
        patterns = (
            [(i, p) for i, p in enumerate(raw) if isinstance(p, str)]
            if isinstance(raw, list)
            else []
        )
        return gw, patterns

    def partial(self, data: dict[str, Any]) -> GatewayConfig:
        """The valid sections of a gateway.yaml that failed validation.

        Its problems are already reported; the cross-checks still run on what
        is valid (and skip what depends on a broken section), so that one
        mistake does not hide the others.
        """
        good: dict[str, Any] = {}
        for key, value in data.items():
            if key not in GatewayConfig.model_fields:
                continue
            if key == "credentials" and isinstance(value, dict):
                good[key] = {}
                for name, cred in value.items():
                    if _valid({key: {name: cred}}):
                        good[key][name] = cred
                    else:
                        self.broken_credentials.add(name)
            elif _valid({key: value}):
                good[key] = value
            else:
                self.broken_sections.add(key)
        return GatewayConfig.model_validate(good)

    def policies(self, patterns: list[tuple[int, str]], gateway_doc: Document) -> None:
        seen = {self.path.absolute()}
        for index, pattern in patterns:
            matched = sorted(
                Path(p)
                for p in glob.glob(
                    os.path.join(self.base, os.path.expanduser(pattern)), recursive=True
                )
                if os.path.isfile(p)
            )
            if not matched:
                where = ("policies", index)
                line = gateway_doc.lines.get(where)
                shown = display(os.path.join(self.base, os.path.expanduser(pattern)))
                # A policy that is not there denies everything: never a pass.
                if glob.has_magic(pattern):
                    message = f"'{shown}' matches no file (its clients and routes are missing)"
                    code = "policies_match_nothing"
                else:
                    message = f"no such file: {shown}"
                    code = "no_such_file"
                problem = Problem(gateway_doc.file, line, f"policies[{index}]", message, code=code)
                self.problems.append(problem)
                self.broken_sections.add("policies")
            for path in matched:
                if path.absolute() in seen:
                    continue
                seen.add(path.absolute())
                self.policy_file(path)

    def policy_file(self, path: Path) -> None:
        doc = self.read(path)
        if doc.empty:
            message = "the file is empty"
            self.problems.append(Problem(doc.file, None, "", message, "warning", "empty_file"))
            return
        if doc.data is None:
            return
        if not isinstance(doc.data, dict):
            message = f"expected a mapping with clients and/or routes, got {_kind(doc.data)}"
            self.problems.append(Problem(doc.file, doc.lines.get(()), "", message))
            return
        for key in doc.data:
            if key not in ("clients", "routes"):
                guess = did_you_mean(key, ("clients", "routes"))
                hint = f"did you mean '{guess}'?" if guess else "expected clients or routes"
                message = f"unknown key '{key}' ({hint})"
                problem = Problem(doc.file, doc.lines.get((key,)), key, message, code="unknown_key")
                self.problems.append(problem)
        for section, model, into, src in (
            ("clients", Client, self.clients, self.client_src),
            ("routes", Route, self.routes, self.route_src),
        ):
            items = doc.data.get(section)
            if items is None:
                continue
            if not isinstance(items, list):
                message = f"expected a list of {section}, got {_kind(items)}"
                self.problems.append(Problem(doc.file, doc.lines.get((section,)), section, message))
                continue
            for i, item in enumerate(items):
                value = _validate(model, item, doc, (section, i), self.problems)
                if value is None:
                    if section == "clients":
                        name = item.get("name") if isinstance(item, dict) else None
                        self.broken_clients.add(str(name) if name is not None else "")
                    continue
                into.append(value)
                src.append((doc.file, i))


def load(
    path: str | Path, env: Mapping[str, str] | None = None, *, offline: bool = False
) -> Config:
    """Read, parse and validate gateway.yaml and its policy files.

    `offline`: secrets need not be there (environment variables that are not
    set and missing secret files are notes, not errors), for checks in CI.
    """
    loader = _Loader(Path(path), os.environ if env is None else env, offline)
    gw, patterns = loader.gateway()
    loader.policies(patterns, loader.docs[0])
    sources = SourceMap(
        gateway_file=loader.docs[0].file,
        lines={(doc.file, p): line for doc in loader.docs for p, line in doc.lines.items()},
        clients=tuple(loader.client_src),
        routes=tuple(loader.route_src),
        files=tuple(doc.file for doc in loader.docs),
        broken_clients=frozenset(loader.broken_clients),
        broken_credentials=frozenset(loader.broken_credentials),
        broken_sections=frozenset(loader.broken_sections),
        broken_files=frozenset(loader.broken_files),
    )
    problems = loader.problems
    config = None
    if gw is not None:
        config = Config(
            path=loader.path,
            gateway=gw,
            clients=tuple(loader.clients),
            routes=tuple(loader.routes),
            files=tuple(loader.files),
            sources=sources,
        )
        from_env = {(doc.file, p): n for doc in loader.docs for p, n in doc.from_env.items()}
        # A value whose ${VAR} failed is reported once, not again by the cross-checks.
        unresolved = {(doc.file, format_key(p)) for doc in loader.docs for p in doc.unresolved}
        problems.extend(
            p
            for p in validate_all(config, from_env, offline=offline)
            if not any(p.file == f and (p.key + ".").startswith(k + ".") for f, k in unresolved)
        )
    order = {name: i for i, name in enumerate(sources.files)}
    problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line or 0))
    if config is None or any(p.severity == "error" for p in problems):
        raise ConfigProblems(problems, config)
    return dataclasses.replace(config, problems=tuple(problems))
