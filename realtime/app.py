"""The quart-trio app: ``/v1/realtime`` (WebSocket), ``/health`` and ``/metrics``."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import attrs
import trio
from quart import Response, websocket
from quart_trio import QuartTrio

from protocol import encode_server_event
from protocol import events as ev

from .metrics import Metrics
from .page import register_page
from .pool import PipelinePool, PoolExhausted
from .session import Outbox, SessionOptions, SessionRunner

log = logging.getLogger("realtime.app")

KEY_SUBPROTOCOL = "openai-insecure-api-key."
#: close codes: OpenAI closes bad keys with 3000; a full pool is "try again later"
CLOSE_BAD_KEY = 3000
CLOSE_POOL_FULL = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011


@attrs.frozen
class AppSettings:
    api_key: str | None = None
    session: SessionOptions = attrs.Factory(SessionOptions)


class WebSocketPort:
    """The session's event port over quart's WebSocket."""

    async def receive(self) -> str | bytes:
        return await websocket.receive()


def offered_key(headers: Any, subprotocols: list[str]) -> str | None:
    """The API key from ``Authorization: Bearer`` or the browser subprotocol."""
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for protocol in subprotocols:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


async def _refuse(code: str, message: str, close_code: int) -> None:
    error = ev.Error(code=code, message=message)
    await websocket.send(encode_server_event(error))
    await websocket.close(close_code, f"invalid_request_error.{code}")


def create_app(
    pool: PipelinePool, metrics: Metrics, settings: AppSettings, shutdown: trio.Event
) -> QuartTrio:
    app = QuartTrio(__name__)
    metrics.pool_size = pool.size

    @app.websocket("/v1/realtime")
    async def realtime() -> None:
        subprotocols = websocket.requested_subprotocols
        await websocket.accept(subprotocol="realtime" if "realtime" in subprotocols else None)
        if settings.api_key is not None:
            key = offered_key(websocket.headers, subprotocols) or ""
            if not hmac.compare_digest(key.encode(), settings.api_key.encode()):
                metrics.sessions_refused += 1
                log.info("refused a connection: invalid API key")
                await _refuse("invalid_api_key", "Incorrect API key provided.", CLOSE_BAD_KEY)
                return
        if shutdown.is_set():
            metrics.sessions_refused += 1
            await _refuse("server_shutting_down", "The server is shutting down.", CLOSE_GOING_AWAY)
            return
        transcription = websocket.args.get("intent") == "transcription"
        model = websocket.args.get("model") or settings.session.model
        options = attrs.evolve(
            settings.session,
            model=model,
            session_type="transcription" if transcription else "realtime",
        )
        try:
            pipeline = pool.acquire_transcription() if transcription else pool.acquire()
        except PoolExhausted:
            metrics.sessions_refused += 1
            capacity = pool.transcription_capacity if transcription else pool.size
            kind = "transcription" if transcription else "voice"
            log.info("refused a %s session: all %d slots are in use", kind, capacity)
            await _refuse(
                "session_limit_reached",
                f"All {capacity} {kind} session slots of this server are in use; try again later.",
                CLOSE_POOL_FULL,
            )
            return
        outbox = Outbox(options.outbox_high_water, options.send_timeout_s)
        async with trio.open_nursery() as connection:
            connection.start_soon(outbox.pump, websocket.send)
            metrics.active_sessions += 1
            metrics.sessions_total += 1
            try:
                runner = SessionRunner(
                    WebSocketPort(), pipeline, options, metrics, outbox, shutdown
                )
                await runner.run()
            finally:
                metrics.active_sessions -= 1
                if transcription:
                    pool.release_transcription(pipeline)
                else:
                    pool.release(pipeline)
            await outbox.drain(timeout_s=1.0)
            connection.cancel_scope.cancel()
        if runner.failed:
            await websocket.close(CLOSE_INTERNAL_ERROR, "session failed")
        else:
            await websocket.close(CLOSE_GOING_AWAY, "session ended")

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
