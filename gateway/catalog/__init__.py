"""Stage 2: the Azure DevOps operation catalog.

Takes a canonical request (upstream host key, method, path, query) and returns
the operation it is, with its bound path parameters and the organization and
project it addresses, or None when no operation matches. `Catalog.builtin()`
loads the catalog shipped with the package once per process.

Matching is case-insensitive, as Azure DevOps routing is. HEAD falls back to the
GET operation. SOAP web services (`/_ws/`, `*.asmx`) and `$batch` endpoints match
operations that are always denied, wherever they appear. Raises BadRequest when
a query parameter that selects the operation (git's `service`) is given twice
with different values. No aiohttp here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import cast
from urllib.parse import unquote, unquote_plus

from gateway.catalog.load import CatalogError, read_catalog
from gateway.catalog.scopes import Scope, Scopes
from gateway.catalog.trie import Segment, Trie, parse_template
from gateway.config.model import DEFAULT_HOSTS
from gateway.errors import BadRequest
from gateway.types import Match, Operation

__all__ = ["Catalog", "CatalogError", "Scope", "Scopes"]

ANY_HOST = "*"
PROJECT_PARAMS = ("project", "projectId", "scopeIdentifier")  # "ID or name of the project"

SOAP = Operation(
    id="soap.WebServices",
    area="soap",
    host=ANY_HOST,
    method="*",
    template="/**",
    scopes=(),
    deny_reason="soap_not_supported",
    note="legacy SOAP web services (/_ws/, *.asmx) carry arbitrary operations in their bodies",
)
BATCH = Operation(
    id="batch.Batch",
    area="batch",
    host=ANY_HOST,
    method="*",
    template="/**",
    scopes=(),
    deny_reason="batch_not_allowed",
    note="$batch endpoints carry other operations in their body",
)

_Entry = tuple[Operation, tuple[str, ...]]
# Requests repeat a limited set of paths (a pipeline polls the same build, a tool lists
# the same repositories): `match` remembers up to RECENT_MATCHES answers that did not
# depend on the query string (then starts over). The catalog never changes after it is
# built, and a Match is frozen, its params read-only.
RECENT_MATCHES = 4096
RECENT_PATH_MAX = 512  # longer paths are not remembered: the memory stays a few MiB
_UNKNOWN = object()
# SECURITY: only ASCII letters fold. str.lower() maps KELVIN SIGN to 'k' and the like,
# which Azure DevOps (.NET ordinal ignore-case) does not: a literal must not match them.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _param_names(segments: tuple[Segment, ...]) -> tuple[str, ...]:
    return tuple(s.text for s in segments if s.kind != "literal")


def fold(text: str) -> str:
    """Case-fold the way Azure DevOps compares names: ASCII letters only."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def split_path(path: str) -> tuple[list[str], list[str]] | None:
    """Decoded segments and their lower-case forms; None for an empty inner segment."""
    if "%" in path or not path.isascii():
        original = [unquote(p) for p in path.split("/")[1:]]
        lowered = [fold(p) for p in original]
    else:
        original = path.split("/")[1:]
        lowered = path.lower().split("/")[1:]
    if len(original) > 1 and original[-1] == "":
        original.pop()  # one trailing slash: Azure DevOps routes ignore it
        lowered.pop()
    if original == [""]:
        return [], []
    if "" in original:
        return None
    return original, lowered


def query_values(query: str, name: str) -> set[str]:
    values: set[str] = set()
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if unquote_plus(key).strip().lower() == name:
            values.add(unquote_plus(value).strip().lower())
    return values


class Catalog:
    def __init__(
        self, operations: Iterable[Operation], scopes: Iterable[Scope] = (), source: str = ""
    ) -> None:
        self.operations = tuple(operations)
        self.scopes = Scopes(scopes)
        self.source = source
        self._tries: dict[tuple[str, str], Trie] = {}
        self._recent: dict[tuple[str, str, str], Match | None] = {}
        hosts = set(DEFAULT_HOSTS) | {op.host for op in self.operations} | {ANY_HOST}
        # Query-specific variants first: they are chosen when their query matches.
        self.segments: dict[str, tuple[Segment, ...]] = {}  # template -> parsed
        # Alternatives chosen by the request body: found by `body_variants`, not by path.
        self._by_body: dict[tuple[str, str, str], tuple[Operation, ...]] = {}
        for op in self.operations:
            if op.body:
                key = (op.host, op.method, op.template.lower())
                self._by_body[key] = (*self._by_body.get(key, ()), op)
        for op in sorted(self.operations, key=lambda o: not o.query):
            if op.body:
                continue
            segments = self.segments.get(op.template) or parse_template(op.template)
            self.segments[op.template] = segments
            entry: _Entry = (op, _param_names(segments))
            for host in hosts if op.host == ANY_HOST else (op.host,):
                trie = self._tries.setdefault((host, op.method), Trie())
                trie.add(segments, entry)

    @classmethod
    def builtin(cls) -> Catalog:
        """The catalog shipped with the package (loaded once, then shared)."""
        return _builtin()

    @classmethod
    def load(cls, directory: Path | None = None) -> Catalog:
        files = read_catalog(directory)
        return cls(files.operations, files.scopes, files.source)

    def __len__(self) -> int:
        return len(self.operations)

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def find(self, operation_id: str) -> list[Operation]:
        return [op for op in self.operations if op.id == operation_id]

    def body_variants(self, operation: Operation) -> tuple[Operation, ...]:
        """The operations that replace `operation` when the request body selects them."""
        if not self._by_body:
            return ()
        return self._by_body.get((operation.host, operation.method, operation.template.lower()), ())

    def match(self, host: str, method: str, path: str, query: str = "") -> Match | None:
        method = method.upper()
        key = (host, method, path)
        found = self._recent.get(key, _UNKNOWN)
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]  # a Match or None, never _UNKNOWN
        found, by_query = self._lookup(host, method, path, query)
        if not by_query and len(path) <= RECENT_PATH_MAX:
            if len(self._recent) >= RECENT_MATCHES:
                self._recent.clear()
            self._recent[key] = found
        return found

    def _lookup(self, host: str, method: str, path: str, query: str) -> tuple[Match | None, bool]:
        """The match, and whether the query took part in choosing it."""
        split = split_path(path)
        if split is None:
            return None, False
        original, lowered = split
        flat = "/".join(lowered)
        if "_ws" in flat or ".asmx" in flat or "$batch" in flat:
            for seg in lowered:
                # SECURITY: SOAP endpoints are refused anywhere in the path, on any host.
                if seg == "_ws" or seg.endswith(".asmx"):
                    return Match(SOAP, {}, None, None), False
                if seg == "$batch":
                    return Match(BATCH, {}, None, None), False
        found, by_query = self._match(host, method, original, lowered, query)
        if found is None and method == "HEAD":
            found, by_get = self._match(host, "GET", original, lowered, query)
            by_query = by_query or by_get
        return found, by_query

    def _match(
        self, host: str, method: str, original: list[str], lowered: list[str], query: str
    ) -> tuple[Match | None, bool]:
        trie = self._tries.get((host, method)) or self._tries.get((ANY_HOST, method))
        if trie is None:
            return None, False
        result = trie.match(lowered, original)
        if result is None:
            return None, False
        entries, captures = result
        by_query = False
        for entry in entries:
            op, names = cast(_Entry, entry)
            if op.query:
                by_query = True
                if not _query_selects(op.query, query):
                    continue
            params = dict(zip(names, captures, strict=False))
            project = (
                params.get("project") or params.get("projectId") or params.get("scopeIdentifier")
            )
            # read-only: the same Match may answer many requests (see RECENT_MATCHES)
            return Match(
                op, MappingProxyType(params), params.get("organization"), project
            ), by_query
        return None, by_query


def _query_selects(wanted: tuple[tuple[str, str], ...], query: str) -> bool:
    for name, value in wanted:
        given = query_values(query, name)
        if len(given) > 1:
            # SECURITY: which value would the server use? Refuse to guess.
            raise BadRequest(
                f"query parameter {name!r} is given more than once with different values",
                reason="ambiguous_path",
            )
        if given != {value.lower()}:
            return False
    return True


@functools.cache
def _builtin() -> Catalog:
    files = read_catalog()
    return Catalog(files.operations, files.scopes, files.source)
