"""Serve: the proxy listener, the admin listener (/healthz, /readyz, /metrics),
signals and graceful shutdown."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from gateway.app import Gateway, build_runtime
from gateway.configure import load_checked


def admin_app(gateway: Gateway) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ok, why = gateway.runtime.tokens.ready()
        return web.json_response({"ready": ok, "detail": why}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", gateway.observability.metrics_view)
    return app


async def _serve(config_path: str) -> None:
    config = load_checked(config_path)
    gateway = Gateway(build_runtime(config))
    await gateway.start()
    listen, admin = config.gateway.listen, config.gateway.admin
    runners = []
    for app, host, port in (
        (gateway.proxy_app(), listen.host, listen.port),
        (admin_app(gateway), admin.host, admin.port),
    ):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()
    await gateway.close()


def serve(config_path: str, *, workers: int = 1) -> int:
    asyncio.run(_serve(config_path))
    return 0
