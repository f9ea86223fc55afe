"""The worker's HTTP endpoints on the metrics port: /metrics, /healthz and /ready."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.metrics import Metrics

log = logging.getLogger(__name__)


class HttpEndpoints:
    """A small aiohttp server; ``is_ready`` decides /ready."""

    def __init__(self, metrics: Metrics, port: int, is_ready: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._port = port
        self._is_ready = is_ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", self._port)  # noqa: S104 - scraped from outside
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("metrics on http://127.0.0.1:%d/metrics (also /healthz, /ready)", self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics_page(self, request: web.Request) -> web.Response:
        ready = self._is_ready()
        self._metrics.ready.set(1 if ready else 0)
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self._is_ready()
        self._metrics.ready.set(1 if ready else 0)
        return web.json_response({"ready": ready}, status=200 if ready else 503)
