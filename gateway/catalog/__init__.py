"""Stage 2: the Azure DevOps operation catalog.

`Catalog.builtin()` loads the generated catalog shipped with the package;
`match(host, method, path)` returns the operation a canonical request is, with
its bound parameters, or None. No aiohttp here.
"""

from __future__ import annotations

from gateway.types import Match, Operation


class Catalog:
    def __init__(self, operations: tuple[Operation, ...]) -> None:
        self.operations = operations

    @classmethod
    def builtin(cls) -> Catalog:
        return cls(())

    def __len__(self) -> int:
        return len(self.operations)

    def match(self, host: str, method: str, path: str) -> Match | None:
        return None
