"""Stage 3: authorize a matched request against the client's policy.

Takes the client identity and the request context (canonical host/path,
effective method, matched operation) and returns a Decision. Pure: no I/O,
no aiohttp. Default deny.
"""

from __future__ import annotations

from gateway.catalog import Catalog
from gateway.config.model import Config
from gateway.types import ClientIdentity, Decision, RequestContext


class Policy:
    def __init__(self, config: Config, catalog: Catalog) -> None:
        self.config = config
        self.catalog = catalog

    def authorize(self, identity: ClientIdentity, ctx: RequestContext) -> Decision:
        if ctx.match is None:
            return Decision(False, "no_matching_operation", message="no Azure DevOps operation matches")
        return Decision(True, None, ctx.match.operation.scopes)
