"""Hot reload: SIGHUP, or a change to any configuration or policy file.

Takes the path `run` was started with; loads the whole configuration again
with the same checked loader, builds a complete new Runtime and starts it,
and only then swaps the one reference the request pipeline reads
(`Gateway.swap`). Requests already in flight finish on the Runtime they
started with, which is closed once they are done. A configuration that fails
to load or build is refused: the running one keeps serving, the reason is
logged, and `azdo_gateway_config_reloads_total{result="failure"}` counts it.

File changes are found by polling (mtime, size and inode of every file the
configuration was read from, plus whatever the `policies` globs match now, so
a new policy file counts too). A change is applied once the files have stayed
the same for one poll, so a half-written file is not loaded mid-save.
Kubernetes ConfigMap updates (an atomic symlink swap) are seen the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from gateway.app import Gateway, Runtime, build_runtime
from gateway.config.model import Config
from gateway.errors import ConfigError
from gateway.loading import load_checked
from gateway.observability import logs
from gateway.tasks import spawn

log = logging.getLogger("azdo_gateway.reload")

Fingerprint = dict[str, tuple[int, int, int]]


def fingerprint(config: Config) -> Fingerprint:
    """What the configuration's files look like on disk right now."""
    paths = {Path(p) for p in config.files} | {config.path}
    base = config.path.parent
    for pattern in config.gateway.policies:
        paths.update(base.glob(pattern))
    seen: Fingerprint = {}
    for path in sorted(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue  # a deleted file: its absence is the change
        seen[str(path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return seen


class Reloader:
    def __init__(
        self,
        gateway: Gateway,
        path: str | Path,
        *,
        loader: Callable[[Path], Config] = load_checked,
        build: Callable[[Config], Runtime] = build_runtime,
        interval_s: float = 2.0,
    ) -> None:
        self.gateway = gateway
        self.path = Path(path)
        self.loader = loader
        self.build = build
        self.interval_s = interval_s
        self.last_error: str | None = None
        self.generation = 0  # successful reloads so far
        self._lock = asyncio.Lock()
        self._seen = fingerprint(gateway.runtime.config)
        self._watch: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[bool]] = set()

    async def reload(self, why: str = "requested") -> bool:
        """Load, validate, build and swap in the configuration. True on success."""
        async with self._lock:
            metrics = self.gateway.observability.metrics
            self._seen = fingerprint(self.gateway.runtime.config)
            try:
                config = await asyncio.to_thread(self.loader, self.path)
                runtime = self.build(config)
                runtime.tokens.adopt(self.gateway.runtime.tokens)
                runtime.authn.adopt(self.gateway.runtime.authn)
                await runtime.tokens.start()
            except ConfigError as err:
                return self._refuse(why, "; ".join(map(str, err.errors)))
            except Exception as err:  # anything else a bad config can trigger
                log.debug("reload failed", exc_info=True)
                return self._refuse(why, f"{type(err).__name__}: {err}")
            self._seen = fingerprint(config)
            old = self.gateway.swap(runtime)
            self.gateway.observability.adopt_config(config)
            logs.reconfigure(config.gateway.logging)
            grace = config.gateway.limits.shutdown_grace_s
            task = spawn(self.gateway.retire(old, grace), name="retire-runtime")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            self.generation += 1
            self.last_error = None
            metrics.reloaded(True)
            log.info(
                "configuration reloaded (%s): %d clients, %d routes",
                why,
                len(config.clients),
                len(config.routes),
            )
            for warning in config.warnings:
                log.warning("configuration: %s", warning)
            if config.gateway.state != old.config.gateway.state:
                log.warning("configuration: the state section changed: it applies on restart")
            return True

    def _refuse(self, why: str, reason: str) -> bool:
        self.last_error = reason
        self.gateway.observability.metrics.reloaded(False)
        log.error("configuration reload (%s) refused, keeping the running one: %s", why, reason)
        return False

    async def poll(self) -> bool | None:
        """One look at the files: reload if they changed and have settled.
        Returns the reload's result, or None when nothing was done."""
        now = fingerprint(self.gateway.runtime.config)
        if now == self._seen:
            return None
        await asyncio.sleep(self.interval_s)  # let a writer finish
        if fingerprint(self.gateway.runtime.config) != now:
            return None  # still changing; look again next time
        return await self.reload("files changed")

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception:  # never let the watcher die
                log.exception("configuration watch failed")

    def start(self, *, signals: bool = True) -> None:
        """Watch the files; on SIGHUP reopen the audit file and reload."""
        self._watch = spawn(self._watch_loop(), name="config-watch")
        if signals:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_sighup)

    def on_sighup(self) -> None:
        self.gateway.observability.reopen()
        spawn(self.reload("SIGHUP"), name="reload")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
        for task in list(self._retiring):
            await task
