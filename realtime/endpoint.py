"""The ``/v1/realtime`` WebSocket endpoint, served straight on ASGI.

Every 20 ms input-audio append is one WebSocket message, so the per-message path is the
server's hottest loop. The endpoint reads hypercorn's ASGI ``receive`` in the session's own
reader task and hands frames to hypercorn's ``send`` directly: a framework in between adds a
task hop and a request-context lookup to every message. The HTTP routes (page, health,
metrics) stay on the quart-trio app, which gets every other scope.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from protocol import encode_server_event
from protocol import events as ev

from .calls import Calls, CallSettings, sideband
from .metrics import Metrics
from .outbox import Outbox
from .phone import PhoneCalls, PhoneSettings
from .phone_stream import Provider, media_stream
from .pool import PipelinePool, PoolExhausted
from .ports import Receive, Send
from .session import SessionOptions, SessionRunner

log = logging.getLogger("realtime.endpoint")

REALTIME_PATH = "/v1/realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
#: close codes: OpenAI closes bad keys with 3000; a full pool is "try again later"
CLOSE_BAD_KEY = 3000
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_POOL_FULL = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011

ASGIApp = Callable[[Mapping[str, Any], Receive, Send], Awaitable[None]]


@attrs.frozen
class AppSettings:
    api_key: str | None = None
    session: SessionOptions = attrs.Factory(SessionOptions)
    calls: CallSettings = attrs.Factory(CallSettings)
    phone: PhoneSettings = attrs.Factory(PhoneSettings)


def key_accepted(required: str | None, offered: str | None) -> bool:
    """Whether a client may go on: the server requires no key, or ``offered`` is it."""
    if required is None:
        return True
    return hmac.compare_digest((offered or "").encode(), required.encode())


def offered_key(headers: Mapping[str, str], subprotocols: list[str]) -> str | None:
    """The API key from ``Authorization: Bearer`` or the browser subprotocol."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    for protocol in subprotocols:
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


class ClientPort:
    """The session's incoming frames, read from ASGI ``receive`` in the caller's task.

    A disconnect cancels ``scope``: the session ends the way any cancelled task does, its
    ``finally`` blocks returning the pipeline to the pool.
    """

    def __init__(self, receive: Receive, scope: trio.CancelScope) -> None:
        self._receive = receive
        self._scope = scope

    async def receive(self) -> str | bytes:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                return text if text is not None else message.get("bytes") or b""
            if message["type"] == "websocket.disconnect":
                self._scope.cancel()
                await trio.lowlevel.checkpoint()  # raises Cancelled here


@attrs.define
class RealtimeEndpoint:
    """One WebSocket connection at ``/v1/realtime``: checks, pool slot, session, close."""

    pool: PipelinePool
    metrics: Metrics
    settings: AppSettings
    shutdown: trio.Event
    calls: Calls | None = None
    #: set when the server drains: no new session; live ones go on
    draining: trio.Event = attrs.Factory(trio.Event)

    async def __call__(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        subprotocols: list[str] = list(scope.get("subprotocols") or [])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "realtime" if "realtime" in subprotocols else None,
                "headers": [],
            }
        )
        with trio.CancelScope() as connection_scope:
            port = ClientPort(receive, connection_scope)
            await self._serve(port, receive, send, headers, subprotocols, query)

    async def _serve(
        self,
        port: ClientPort,
        receive: Receive,
        send: Send,
        headers: Mapping[str, str],
        subprotocols: list[str],
        query: Mapping[str, list[str]],
    ) -> None:
        settings, metrics, pool = self.settings, self.metrics, self.pool
        if not key_accepted(settings.api_key, offered_key(headers, subprotocols)):
            metrics.sessions_refused += 1
            log.info("refused a connection: invalid API key")
            await _refuse(send, "invalid_api_key", "Incorrect API key provided.", CLOSE_BAD_KEY)
            return
        call_id = query.get("call_id", [""])[0]
        if call_id:  # a live call's sideband: it joins while the call lives, drain or not
            await self._join_call(call_id, receive, send)
            return
        if self.shutdown.is_set() or self.draining.is_set():
            metrics.sessions_refused += 1
            await _refuse(
                send, "server_shutting_down", "The server is shutting down.", CLOSE_GOING_AWAY
            )
            return
        transcription = query.get("intent", [""])[0] == "transcription"
        options = attrs.evolve(
            settings.session,
            model=query.get("model", [""])[0] or settings.session.model,
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
                send,
                "session_limit_reached",
                f"All {capacity} {kind} session slots of this server are in use; try again later.",
                CLOSE_POOL_FULL,
            )
            return

        async def send_text(frame: str) -> None:
            await send({"type": "websocket.send", "text": frame})

        outbox = Outbox(options.outbox_high_water, options.send_timeout_s)
        async with trio.open_nursery() as connection:
            connection.start_soon(outbox.pump, send_text)
            metrics.active_sessions += 1
            metrics.sessions_total += 1
            try:
                runner = SessionRunner(port, pipeline, options, metrics, outbox, self.shutdown)
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
            await _close(send, CLOSE_INTERNAL_ERROR, "session failed")
        else:
            await _close(send, CLOSE_GOING_AWAY, "session ended")

    async def _join_call(self, call_id: str, receive: Receive, send: Send) -> None:
        """Sideband control of a live WebRTC call: its events, both ways, until it ends."""
        call = None if self.calls is None else self.calls.live.get(call_id)
        if call is None:
            message = f"No live call with id {call_id!r}."
            await _refuse(send, "call_not_found", message, CLOSE_POLICY, param="call_id")
            return

        async def send_text(frame: str) -> None:
            await send({"type": "websocket.send", "text": frame})

        log.info("call %s: a sideband connection joined", call_id)
        await sideband(call, receive, send_text)
        await _close(send, CLOSE_NORMAL, "call ended")


async def _close(send: Send, code: int, reason: str) -> None:
    await send({"type": "websocket.close", "code": code, "reason": reason})


async def _refuse(
    send: Send, code: str, message: str, close_code: int, param: str | None = None
) -> None:
    error = ev.Error(code=code, message=message, param=param)
    await send({"type": "websocket.send", "text": encode_server_event(error)})
    await _close(send, close_code, f"invalid_request_error.{code}")


@attrs.define
class Router:
    """ASGI: ``/v1/realtime`` WebSocket connections to the endpoint, phone media streams to
    their adapter, the rest to the HTTP app."""

    endpoint: RealtimeEndpoint
    http_app: ASGIApp
    phone: PhoneCalls | None = None
    #: phone providers, whose media streams arrive at ``/{name}/media/`` (``phone_stream.py``)
    providers: tuple[Provider, ...] = ()

    async def __call__(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == REALTIME_PATH:
            await self.endpoint(scope, receive, send)
            return
        if scope["type"] == "websocket" and self.phone is not None:
            for provider in self.providers:
                if str(scope["path"]).startswith(provider.media_path):
                    await media_stream(self.phone, provider, scope, receive, send)
                    return
        await self.http_app(scope, receive, send)
