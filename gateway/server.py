"""Serve: the proxy listener, the admin listener, signals and graceful shutdown.

Takes a loaded Config and a started Gateway; serves the proxy on `listen`
(TLS when `listen.tls` is set, optionally asking for or requiring client
certificates signed by `client_ca_file`) and the admin endpoints on `admin`:

    /healthz   200 while the process serves
    /readyz    200 when the upstream credentials are usable, 503 (with why) otherwise
               and while shutting down; `state` reports the state backend (a Redis
               that is down makes it 503 only with state.on_error: closed)
    /metrics   Prometheus text (the observability stage's view)

SIGTERM or SIGINT: stop accepting, close idle keep-alive connections, let
requests in flight finish within `limits.shutdown_grace_s`, cancel the rest,
exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.app import Gateway, build_runtime
from gateway.config.model import TLS, Config, LogSettings
from gateway.errors import ConfigError
from gateway.loading import load_checked
from gateway.observability import logs
from gateway.observability.logs import GatewayHandler
from gateway.reload import Reloader
from gateway.supervisor import default_workers, supervise, worker_ports

log = logging.getLogger("azdo_gateway")

DRAINING = web.AppKey("draining", asyncio.Event)


def admin_app(gateway: Gateway, draining: asyncio.Event | None = None) -> web.Application:
    app = web.Application()
    app[DRAINING] = draining or asyncio.Event()

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if request.app[DRAINING].is_set():
            return web.json_response({"ready": False, "detail": "shutting down"}, status=503)
        ok, why = gateway.runtime.tokens.ready()
        state = gateway.state_status()
        if not state["ok"] and gateway.runtime.config.gateway.state.on_error == "closed":
            ok, why = False, f"state backend unavailable: {state['detail']}"
        body = {"ready": ok, "detail": why, "state": state}
        return web.json_response(body, status=200 if ok else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", gateway.observability.metrics_view)
    return app


def server_tls(tls: TLS) -> ssl.SSLContext:
    """The listener's TLS context: TLS 1.2+, client certificates when configured."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(cafile=tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


@dataclass
class Listeners:
    """The running proxy and admin servers of one process."""

    proxy: web.BaseRunner
    admin: web.BaseRunner
    draining: asyncio.Event
    proxy_url: str
    admin_url: str

    async def stop(self) -> None:
        """Drain the proxy (within the grace period), then stop the admin server."""
        self.draining.set()
        await self.proxy.cleanup()
        await self.admin.cleanup()


def _url(runner: web.BaseRunner, scheme: str) -> str:
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


async def start_listeners(gateway: Gateway, config: Config) -> Listeners:
    """Bind both listeners (port 0 picks a free port) and start serving."""
    cfg = config.gateway
    limits = cfg.limits
    proxy = web.ServerRunner(
        gateway.proxy_server(
            access_log=None,
            handler_cancellation=True,  # a client that goes away cancels its upstream call
            keepalive_timeout=limits.idle_timeout_s,
            max_line_size=limits.max_url_length,
            max_field_size=limits.max_header_bytes,
        ),
        shutdown_timeout=limits.shutdown_grace_s,
    )
    draining = asyncio.Event()
    admin = web.AppRunner(admin_app(gateway, draining), access_log=None, shutdown_timeout=1)
    await proxy.setup()
    await admin.setup()
    tls = server_tls(cfg.listen.tls) if cfg.listen.tls else None
    try:
        # a worker of `run --workers N` binds the supervisor's ports with SO_REUSEPORT
        ports = worker_ports()
        proxy_port, admin_port = ports or (cfg.listen.port, cfg.admin.port)
        reuse = True if ports else None
        await web.TCPSite(
            proxy, cfg.listen.host, proxy_port, ssl_context=tls, reuse_port=reuse
        ).start()
        await web.TCPSite(admin, cfg.admin.host, admin_port, reuse_port=reuse).start()
    except BaseException:
        await proxy.cleanup()
        await admin.cleanup()
        raise
    return Listeners(
        proxy, admin, draining, _url(proxy, "https" if tls else "http"), _url(admin, "http")
    )


async def _serve(config: Config) -> None:
    gateway = Gateway(build_runtime(config))
    await gateway.start()
    try:
        listeners = await start_listeners(gateway, config)
    except BaseException:
        await gateway.close()
        raise
    reloader = Reloader(gateway, config.path)
    reloader.start()  # SIGHUP and changes to any config or policy file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # What start-up built (configuration, catalog, policy) lives as long as the
    # process: keep it out of the cyclic garbage collector's full passes.
    gc.freeze()
    log.info("azdo-gateway serving on %s (admin %s)", listeners.proxy_url, listeners.admin_url)
    try:
        await stop.wait()
        listeners.draining.set()  # /readyz turns 503 before anything else stops
        log.info(
            "shutting down: finishing requests in flight (up to %ss)",
            config.gateway.limits.shutdown_grace_s,
        )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await reloader.close()
        await listeners.stop()
        await gateway.close()
    log.info("stopped")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve(config_path: str, *, workers: int | None = 1) -> int:
    """`azdo-gateway run`: 0 after a clean shutdown, 1 when it cannot start."""
    embedded = any(not isinstance(h, GatewayHandler) for h in logging.getLogger().handlers)
    if not embedded:  # an application that set up logging before calling serve() keeps it
        logs.install(LogSettings())
    try:
        config = load_checked(config_path)
    except ConfigError as err:
        for problem in err.errors:
            print(problem, file=sys.stderr)
        return 1
    if not embedded:
        logs.install(config.gateway.logging)
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    if workers is None:
        workers = default_workers()
    if workers < 1:
        print(f"--workers: expected 1 or more, got {workers}", file=sys.stderr)
        return 1
    if workers > 1 and worker_ports() is None:
        return supervise(config, workers)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(config))
    except OSError as err:  # the listen address is taken, a TLS file is missing, ...
        print(f"azdo-gateway: cannot serve: {err}", file=sys.stderr)
        return 1
    return 0
