"""Where each configuration element came from: file, line and key.

A `SourceMap` is built by the loader and kept on `Config`, so that any stage
can turn a path into the configuration (`("clients", 2, "scopes", 1)`) into
`policies/clients/ci.yaml:14: clients[0].scopes[1]`: the file the element was
written in, its line, and its key as the user sees it in that file. Clients and
routes are numbered across all policy files in `Config`; the key shown uses
the position inside the file, which is what the user can count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config.problems import PathKey, Problem, Severity

__all__ = ["PathKey", "Problem", "Severity", "SourceMap", "format_key"]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


def format_key(path: PathKey) -> str:
    """`("clients", 2, "api_keys", 0, "id")` -> `clients[2].api_keys[0].id`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out or "(top level)"


@dataclass(frozen=True, slots=True)
class SourceMap:
    """Lines of every element of every file read, and where merged lists came from."""

    gateway_file: str = "gateway.yaml"
    # (file, path inside that file) -> line; mapping entries record the line of their key
    lines: Mapping[tuple[str, PathKey], int] = field(default_factory=dict)
    # position in Config.clients / Config.routes -> (file, position inside that file)
    clients: tuple[tuple[str, int], ...] = ()
    routes: tuple[tuple[str, int], ...] = ()
    files: tuple[str, ...] = ()  # display names, gateway.yaml first
    # What failed validation, so that cross-checks do not report it again as missing:
    broken_clients: frozenset[str] = frozenset()  # client names
    broken_credentials: frozenset[str] = frozenset()  # credential names
    broken_sections: frozenset[str] = frozenset()  # top-level keys of gateway.yaml
    broken_files: frozenset[str] = frozenset()  # files that could not be read or parsed

    @property
    def incomplete(self) -> bool:
        """Some clients may be missing (a client, a policy file or a `policies` entry
        failed): "not used by any client" and "no clients" would mislead."""
        return bool(self.broken_clients or self.broken_files or "policies" in self.broken_sections)

    def resolve(self, path: PathKey) -> tuple[str, PathKey]:
        """The file a `Config` path lives in and the path inside that file."""
        if len(path) >= 2 and path[0] in ("clients", "routes") and isinstance(path[1], int):
            table = self.clients if path[0] == "clients" else self.routes
            if 0 <= path[1] < len(table):
                file, index = table[path[1]]
                return file, (path[0], index, *path[2:])
        return self.gateway_file, path

    def line_of(self, file: str, path: PathKey) -> int | None:
        """Line of `path` in `file`, or of its nearest ancestor written there."""
        for end in range(len(path), 0 if path else -1, -1):
            line = self.lines.get((file, path[:end]))
            if line is not None:
                return line
        return None

    def problem(
        self,
        path: PathKey,
        message: str,
        *,
        code: str = "invalid",
        severity: Severity = "error",
    ) -> Problem:
        """The problem at `path` (a path into `Config`), located in its file."""
        file, inner = self.resolve(path)
        key = format_key(inner) if inner else ""
        return Problem(file, self.line_of(file, inner), key, message, severity, code, path)

    def warning(self, path: PathKey, message: str, code: str) -> Problem:
        return self.problem(path, message, code=code, severity="warning")

    def locate(self, path: PathKey) -> str:
        file, inner = self.resolve(path)
        line = self.line_of(file, inner)
        where = f"{file}:{line}" if line else file
        return f"{where}: {format_key(inner)}"
