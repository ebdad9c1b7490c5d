"""The server's ASGI app: ``/v1/realtime`` on the raw endpoint, HTTP routes on quart-trio."""

from __future__ import annotations

import json
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from . import phone_stream
from .calls import CallRefused, Calls, error_body
from .endpoint import AppSettings, RealtimeEndpoint, Router, key_accepted, offered_key
from .metrics import Metrics, render_workers
from .page import register_page
from .phone import PhoneCalls, PhoneSettings
from .phone_stream import Provider
from .pool import PipelinePool
from .rtc_calls import WebRtcCalls
from .telnyx import Telnyx
from .twilio import Twilio


def create_app(
    pool: PipelinePool,
    metrics: Metrics,
    settings: AppSettings,
    shutdown: trio.Event,
    calls: Calls,
) -> Router:
    metrics.pool_size = pool.size
    endpoint = RealtimeEndpoint(pool, metrics, settings, shutdown, calls, calls.draining)
    phone = PhoneCalls(calls, settings.phone)
    providers = phone_providers(settings.phone)
    http = create_http_app(pool, metrics, settings, shutdown, calls, phone, providers)
    return Router(endpoint, http, phone, providers)


def phone_providers(settings: PhoneSettings) -> tuple[Provider, ...]:
    """The telephony providers whose calls the server takes (each at ``/{name}/...``): once
    any provider's signing key is configured, only the providers with keys (an unchecked
    route beside a checked one would let anyone place calls); with none, all of them."""
    providers: tuple[Provider, ...] = (
        Twilio(settings.twilio_auth_token),
        Telnyx(settings.telnyx_public_key),
    )
    keyed = tuple(provider for provider in providers if provider.keyed)
    return keyed or providers


def create_http_app(
    pool: PipelinePool,
    metrics: Metrics,
    settings: AppSettings,
    shutdown: trio.Event,
    calls: Calls,
    phone: PhoneCalls | None = None,
    providers: tuple[Provider, ...] | None = None,
) -> QuartTrio:
    """``GET /`` (the browser page), ``/ready``, ``/health``, ``/metrics``, the WebRTC calls,
    call control and the phone provider's webhooks."""
    app = QuartTrio(__name__)
    webrtc = WebRtcCalls(calls)
    phone = phone if phone is not None else PhoneCalls(calls, settings.phone)

    def refusal(error: CallRefused) -> Response:
        return Response(
            error_body(error.error), status=error.status, content_type="application/json"
        )

    def key_refused() -> Response | None:
        offered = offered_key({"authorization": request.headers.get("Authorization", "")}, [])
        if key_accepted(settings.api_key, offered):
            return None
        metrics.sessions_refused += 1
        return refusal(
            CallRefused(
                401, "invalid_api_key", "Incorrect API key provided.", "invalid_request_error"
            )
        )

    async def offer() -> tuple[str, dict[str, Any] | None]:
        """The SDP offer and the optional session, from a raw or a multipart body."""
        if request.mimetype == "multipart/form-data":
            form, files = await request.form, await request.files
            parts = {name: form[name] for name in form}
            for name in files:
                parts[name] = (await files[name].read()).decode("utf-8", "replace")
            sdp, session_text = parts.get("sdp"), parts.get("session")
            try:
                session = json.loads(session_text) if session_text else None
            except ValueError:
                session = None
            if session_text and not isinstance(session, dict):
                raise CallRefused(
                    400,
                    "invalid_json",
                    "The 'session' part is not a JSON object.",
                    "invalid_request_error",
                )
            if not sdp:
                raise CallRefused(
                    400,
                    "missing_required_parameter",
                    "The 'sdp' part is missing.",
                    "invalid_request_error",
                )
            return sdp, session
        if request.mimetype in ("application/sdp", ""):
            return (await request.get_data(as_text=True)), None
        raise CallRefused(
            415,
            "unsupported_content_type",
            "Send the SDP offer as application/sdp, or as multipart/form-data with 'sdp' and "
            "'session' parts.",
            "invalid_request_error",
        )

    @app.post("/v1/realtime/calls")
    async def create_call() -> Response:
        refused = key_refused()
        if refused is not None:
            return refused
        try:
            sdp, session = await offer()
            call_id, answer = await webrtc.create(sdp, session, request.args.get("model"))
        except CallRefused as error:
            return refusal(error)
        location = f"/v1/realtime/calls/{call_id}"
        return Response(
            answer, status=201, content_type="application/sdp", headers={"Location": location}
        )

    @app.delete("/v1/realtime/calls/<call_id>")
    @app.post("/v1/realtime/calls/<call_id>/hangup")
    async def hang_up(call_id: str) -> Response:
        refused = key_refused()
        if refused is not None:
            return refused
        if phone.hang_up(call_id):
            return Response("", status=200)
        return refusal(
            CallRefused(
                404, "call_not_found", f"No live call with id {call_id!r}.", "invalid_request_error"
            )
        )

    async def control_body() -> dict[str, Any]:
        """A call-control request's JSON object (an empty body is an empty object)."""
        text = await request.get_data(as_text=True)
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise CallRefused(
                400,
                "invalid_json",
                "The request body is not a JSON object.",
                "invalid_request_error",
            )
        return body

    controls = {
        "accept": lambda call_id, body: phone.accept(call_id, body),
        "reject": lambda call_id, body: phone.reject(call_id, body.get("status_code")),
        "refer": lambda call_id, body: phone.refer(call_id, body.get("target_uri")),
    }

    @app.post("/v1/realtime/calls/<call_id>/<action>")
    async def control(call_id: str, action: str) -> Response:
        """Accept, reject or refer a phone call (``hangup`` is above), as OpenAI's SIP
        calls are controlled."""
        refused = key_refused()
        if refused is not None:
            return refused
        try:
            if action not in controls:
                raise CallRefused(
                    404,
                    "unknown_action",
                    f"Unknown call action {action!r}: accept, reject, refer or hangup.",
                    "invalid_request_error",
                )
            controls[action](call_id, await control_body())
        except CallRefused as error:
            return refusal(error)
        return Response("", status=200)

    def stopping() -> str | None:
        if shutdown.is_set():
            return "shutting_down"
        return "draining" if calls.unready.is_set() else None

    @app.route("/ready")
    async def ready() -> tuple[dict[str, Any], int]:
        """Readiness for a load balancer: 200 while a new voice session would be served,
        503 while draining, with no free healthy pipeline, or with no healthy engines.
        ``?ignore_capacity=1`` leaves fullness out (an orchestrator's probe: a full replica
        is still a serving one, which refuses a session it cannot hold itself)."""
        free = pool.free_healthy
        full = free <= 0 and request.args.get("ignore_capacity") != "1"
        status = stopping() or ("unhealthy" if not pool.healthy else "full" if full else "ready")
        body = {"status": status, "pipelines": pool.size, "pipelines_free": free}
        return body, 200 if status == "ready" else 503

    @app.route("/health")
    async def health() -> dict[str, Any]:
        healthy = pool.healthy
        status = "ok" if healthy == pool.size else "degraded" if healthy else "unhealthy"
        return {
            "status": stopping() or status,
            "pipelines": pool.size,
            "pipelines_healthy": healthy,
            "pipelines_in_use": pool.in_use,
            "engine_workers": [
                {
                    "engine": worker.name,
                    "state": worker.state.value,
                    "healthy": worker.healthy,
                    "pid": worker.pid,
                    "restarts": worker.restarts,
                    "crashes": worker.crashes,
                    "last_exit": worker.last_exit,
                }
                for worker in pool.workers()
            ],
            "transcription_sessions": pool.transcription_capacity,
            "transcription_sessions_in_use": pool.transcription_in_use,
            "active_sessions": metrics.active_sessions,
        }

    @app.route("/metrics")
    async def prometheus() -> Response:
        metrics.pool_in_use = pool.in_use
        metrics.draining = int(bool(stopping()))
        text = metrics.render() + render_workers(pool.workers(), pool.healthy)
        return Response(text, content_type="text/plain; version=0.0.4")

    for provider in providers if providers is not None else phone_providers(settings.phone):
        phone_stream.register(app, phone, provider)
    register_page(app)
    return app
