"""The worker's HTTP endpoints on the metrics port: /metrics, /healthz, /ready and /ledger."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.ops.metrics import Metrics

log = logging.getLogger(__name__)


class HttpEndpoints:
    """A small aiohttp server on ``host``; ``is_ready`` decides /ready, ``ledger_ok`` /ledger."""

    def __init__(
        self,
        metrics: Metrics,
        port: int,
        is_ready: Callable[[], bool],
        ledger_ok: Callable[[], bool] = lambda: True,
        host: str = "127.0.0.1",
    ) -> None:
        self._metrics = metrics
        self._port = port
        self._host = host
        self._is_ready = is_ready
        self._ledger_ok = ledger_ok
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/ledger", self._ledger)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[:2] if sockets else (self._host, self._port)
        self.port = int(bound[1])
        host = str(bound[0])
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "metrics on http://%s:%d/metrics (also /healthz, /ready, /ledger)", shown, self.port
        )

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

    async def _ledger(self, request: web.Request) -> web.Response:
        # The contact ledger's health, apart from readiness (docs/operations.md, "Readiness and
        # the ledger").
        up = self._ledger_ok()
        return web.json_response({"ledger": "up" if up else "down"}, status=200 if up else 503)
