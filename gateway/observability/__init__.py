"""Stage 6: metrics and the audit trail.

`Observability(config)` is process-wide (it outlives reloads). The `observe`
middleware calls `started(ctx)` when a request arrives and `finished(ctx)`
once it is answered; other stages report their own events through
`observability.metrics` (token acquisitions, upstream throttling, reloads).
`metrics_view()` serves the admin `/metrics` route.

`azdo_gateway_inflight_requests` is counted in a plain integer and written to
its gauge once per event-loop turn (at once when no loop runs, and before
`/metrics` renders), however many requests started and finished in the turn:
with several workers, the others' scrapes see it at most a turn late.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.authn.api_key import expiry_epoch
from gateway.config.model import Config
from gateway.observability.audit import AuditLog, record
from gateway.observability.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.types import RequestContext

__all__ = ["AuditLog", "Metrics", "Observability"]


class Observability:
    def __init__(self, config: Config, *, registry: CollectorRegistry | None = None) -> None:
        self.metrics = Metrics(registry)
        self.audit = AuditLog(config.gateway.audit.file)
        self._inflight = 0  # requests started and not finished
        self._inflight_due = False  # a write of it to the gauge is scheduled
        self.adopt_config(config)

    def adopt_config(self, config: Config) -> None:
        """Adopt a (re)loaded configuration: label sets and the audit destination."""
        self.metrics.known(
            clients=(c.name for c in config.clients), credentials=config.gateway.credentials
        )
        self.metrics.key_expiries(
            (client.name, key.id, at)
            for client in config.clients
            for key in client.api_keys
            if (at := expiry_epoch(key.expires)) is not None
        )
        if (config.gateway.audit.file or None) != self.audit.destination:
            old, self.audit = self.audit, AuditLog(config.gateway.audit.file)
            old.close()

    def started(self, ctx: RequestContext) -> None:
        self._inflight += 1
        if not self._inflight_due:
            self._export_inflight_soon()

    def finished(self, ctx: RequestContext) -> None:
        self._inflight -= 1
        if not self._inflight_due:
            self._export_inflight_soon()
        seconds = time.perf_counter() - ctx.started
        self.metrics.request_finished(ctx, seconds)
        self.audit.write(record(ctx, seconds))

    def _export_inflight_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: at once
            self._export_inflight()
            return
        self._inflight_due = True
        loop.call_soon(self._export_inflight)

    def _export_inflight(self) -> None:
        self._inflight_due = False
        self.metrics.inflight.set(self._inflight)

    def looked_up(self, ctx: RequestContext, parent: str, found: tuple[str, str] | None) -> None:
        """The audit line of a project lookup the gateway made for request `parent`."""
        entry = record(ctx, time.perf_counter() - ctx.started)
        entry.update(
            kind="project_lookup",
            parentRequestId=parent,
            projectId=found[0] if found else None,
            project=found[1] if found else None,
        )
        self.audit.write(entry)

    def reopen(self) -> None:
        """Reopen the audit file (SIGHUP after a log rotation)."""
        self.audit.reopen()

    async def metrics_view(self, request: web.Request) -> web.Response:
        self.metrics.inflight.set(self._inflight)  # this worker's, up to date
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def close(self) -> None:
        self.audit.close()
