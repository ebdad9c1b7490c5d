"""The server's ASGI app: ``/v1/realtime`` on the raw endpoint, HTTP routes on quart-trio."""

from __future__ import annotations

from typing import Any

import trio
from quart import Response
from quart_trio import QuartTrio

from .endpoint import AppSettings, RealtimeEndpoint, Router
from .metrics import Metrics
from .page import register_page
from .pool import PipelinePool


def create_app(
    pool: PipelinePool, metrics: Metrics, settings: AppSettings, shutdown: trio.Event
) -> Router:
    metrics.pool_size = pool.size
    endpoint = RealtimeEndpoint(pool, metrics, settings, shutdown)
    return Router(endpoint, create_http_app(pool, metrics, shutdown))


def create_http_app(pool: PipelinePool, metrics: Metrics, shutdown: trio.Event) -> QuartTrio:
    """``GET /`` (the browser page), ``/health`` and ``/metrics``."""
    app = QuartTrio(__name__)

    @app.route("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "shutting_down" if shutdown.is_set() else "ok",
            "pipelines": pool.size,
            "pipelines_in_use": pool.in_use,
            "transcription_sessions": pool.transcription_capacity,
            "transcription_sessions_in_use": pool.transcription_in_use,
            "active_sessions": metrics.active_sessions,
        }

    @app.route("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), content_type="text/plain; version=0.0.4")

    register_page(app)
    return app
