"""Stage 6: metrics and the audit trail."""

from __future__ import annotations

from gateway.config.model import Config
from gateway.types import RequestContext


class Observability:
    def __init__(self, config: Config) -> None:
        self.config = config

    def started(self, ctx: RequestContext) -> None:
        return None

    def finished(self, ctx: RequestContext) -> None:
        return None

    def close(self) -> None:
        return None
