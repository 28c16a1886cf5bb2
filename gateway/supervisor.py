"""`azdo-gateway run --workers N`: N worker processes on one port.

Takes a checked configuration and a worker count; starts that many
`azdo-gateway run` processes which each bind the proxy and admin ports with
SO_REUSEPORT (the kernel spreads connections across them), restarts a worker
that dies (backing off when one keeps dying at start), forwards SIGHUP
(reload, reopen the audit file) to every worker, and on SIGTERM/SIGINT fans
the signal out and waits for the workers to drain.

Metrics: the supervisor owns `PROMETHEUS_MULTIPROC_DIR` (the one given in the
environment, emptied at start, or a private temporary directory) so `/metrics`
on any worker reports the sum over all of them; when a worker dies its live
gauges are dropped and its counters kept, so counters never go backwards.

Port 0 (any free port) is resolved here once, so that all workers share it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from gateway.config.model import Config
from gateway.cpus import available_cpus
from gateway.loading import load_checked
from gateway.observability import logs
from gateway.tasks import spawn

log = logging.getLogger("azdo_gateway.supervisor")

WORKER_ENV = "AZDO_GATEWAY_WORKER"  # "proxy_port,admin_port": run as a worker on these ports
FAST_EXIT_S = 2.0  # a worker dying sooner than this after start counts as a crash loop
MAX_BACKOFF_S = 30.0


def worker_ports() -> tuple[int, int] | None:
    """In a worker process: the ports the supervisor assigned, else None."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    proxy, _, admin = value.partition(",")
    return int(proxy), int(admin)


def default_workers() -> int:
    """One worker per CPU this process may use (affinity mask and cgroup CPU quota)."""
    return available_cpus()


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (without listening) so that a port-0 request gets one port for all
    workers; the socket joins the SO_REUSEPORT group but receives nothing."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


@dataclass
class _Worker:
    slot: int
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    failures: int = 0  # consecutive quick deaths
    restarts: int = 0


@dataclass
class Supervisor:
    config: Config
    workers: int
    argv: list[str] = field(default_factory=list)  # command that starts a worker
    _slots: list[_Worker] = field(default_factory=list)
    _stopping: bool = False
    _metrics_dir: str = ""
    _own_dir: bool = False

    def _prepare_metrics_dir(self) -> None:
        given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if given:
            Path(given).mkdir(parents=True, exist_ok=True)
            for stale in Path(given).glob("*.db"):  # values of an earlier run
                stale.unlink()
            self._metrics_dir = given
        else:
            self._metrics_dir = tempfile.mkdtemp(prefix="azdo-gateway-metrics-")
            self._own_dir = True

    async def _spawn(self, worker: _Worker, env: dict[str, str]) -> None:
        worker.proc = await asyncio.create_subprocess_exec(
            *self.argv, env=env, preexec_fn=_die_with_parent
        )
        worker.started = time.monotonic()
        log.info("worker %d started (pid %d)", worker.slot, worker.proc.pid)

    async def _keep(self, worker: _Worker, env: dict[str, str]) -> None:
        """Run one worker slot: start it, and start it again whenever it dies."""
        while not self._stopping:
            await self._spawn(worker, env)
            assert worker.proc is not None
            code = await worker.proc.wait()
            mark_process_dead(worker.proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
            if self._stopping:
                return
            lived = time.monotonic() - worker.started
            worker.failures = worker.failures + 1 if lived < FAST_EXIT_S else 0
            worker.restarts += 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (worker.failures - 1)) if worker.failures else 0
            log.error(
                "worker %d (pid %d) exited with %s after %.1fs; restarting%s",
                worker.slot,
                worker.proc.pid,
                _describe(code),
                lived,
                f" in {delay:.1f}s" if delay else "",
            )
            if delay:
                await asyncio.sleep(delay)

    def _signal_all(self, sig: signal.Signals) -> None:
        for worker in self._slots:
            if worker.proc is not None and worker.proc.returncode is None:
                try:
                    worker.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _on_sighup(self) -> None:
        """Reload: the workers reload themselves; this process takes the new
        `logging` settings for its own lines (a configuration that does not load
        is the workers' to report)."""
        try:
            logs.reconfigure(load_checked(self.config.path).gateway.logging)
        except Exception:  # noqa: S110 - each worker logs why the reload was refused
            pass
        self._signal_all(signal.SIGHUP)

    async def run(self) -> int:
        self._prepare_metrics_dir()
        cfg = self.config.gateway
        reserved = [
            _reserve(cfg.listen.host, cfg.listen.port),
            _reserve(cfg.admin.host, cfg.admin.port),
        ]
        proxy_port, admin_port = (s.getsockname()[1] for s in reserved)
        env = dict(
            os.environ,
            PROMETHEUS_MULTIPROC_DIR=self._metrics_dir,
            **{WORKER_ENV: f"{proxy_port},{admin_port}"},
        )
        scheme = "https" if cfg.listen.tls else "http"
        log.info(
            "azdo-gateway supervisor: %d workers on %s://%s:%d (admin http://%s:%d)",
            self.workers,
            scheme,
            cfg.listen.host,
            proxy_port,
            cfg.admin.host,
            admin_port,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._slots = [_Worker(slot=i + 1) for i in range(self.workers)]
        tasks = [spawn(self._keep(w, env), name=f"worker-{w.slot}") for w in self._slots]
        try:
            await stop.wait()
        finally:
            self._stopping = True
            log.info("supervisor stopping: signalling %d workers", len(self._slots))
            self._signal_all(signal.SIGTERM)
            grace = cfg.limits.shutdown_grace_s + 5
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*tasks, return_exceptions=True)
            except TimeoutError:
                log.error("workers still running after %.0fs: killing them", grace)
                self._signal_all(signal.SIGKILL)
                await asyncio.gather(*tasks, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for sock in reserved:
                sock.close()
            if self._own_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        codes = [w.proc.returncode for w in self._slots if w.proc is not None]
        return 0 if all(c == 0 for c in codes) else 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies (Linux), so a
    killed supervisor never leaves workers holding the port."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def supervise(config: Config, workers: int) -> int:
    """Run `workers` worker processes for `config` until SIGTERM/SIGINT."""
    argv = [sys.executable, "-m", "gateway", "run", "-c", str(config.path), "--workers", "1"]
    try:
        return asyncio.run(Supervisor(config, workers, argv).run())
    except OSError as err:
        print(f"azdo-gateway: cannot serve: {err}", file=sys.stderr)
        return 1
