"""Realtime calls over WebRTC: ``POST /v1/realtime/calls`` and what a call is while it lasts.

A call is a session whose events travel on the peer's ``oai-events`` data channel and whose
audio travels on its media tracks. Its session runs in the server's calls nursery (it
outlives the HTTP request that created it) and ends on hang-up (``DELETE`` on its location,
or ``POST .../hangup``), when the peer connection closes or fails, or when it never connects.
Application servers may join a live call with a WebSocket at ``/v1/realtime?call_id=ID``
(sideband control): they see and send the same events as the data channel.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np
import trio

from protocol import ProtocolError, RealtimeConnection
from protocol.session import deep_merge

from .input_audio import ENGINE_RATE
from .metrics import Metrics
from .outbox import Outbox
from .pool import Pipeline, PipelinePool, PoolExhausted
from .rtc_loop import RtcLoopClosed
from .session import SessionOptions, SessionRunner

log = logging.getLogger("realtime.calls")

#: frames queued for one sideband WebSocket before it counts as not reading
SIDEBAND_QUEUE = 256
#: caller audio chunks (20 ms each) queued for the session before the oldest are dropped
AUDIO_QUEUE = 100
#: client events queued from the data channel and sidebands
EVENT_QUEUE = 256

Float32 = np.ndarray


class CallRefused(Exception):
    """A call cannot be created; ``status`` and ``error`` are the HTTP answer."""

    def __init__(self, status: int, code: str, message: str, error_type: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = {"message": message, "type": error_type, "code": code, "param": None}


@attrs.frozen
class CallSettings:
    """WebRTC options from the command line."""

    #: local addresses offered as ICE host candidates; None = every interface but loopback
    host_addresses: tuple[str, ...] | None = None
    ice_servers: tuple[str, ...] = ()  #: STUN/TURN URLs for the server's own candidates
    connect_timeout_s: float = 20.0  #: a call whose data channel never opens ends after this


class CallMedia:
    """The session's side of a call's audio: caller audio in, answer audio out (Trio side)."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self.audio_in = call.audio_receive  #: float32 mono chunks at the input rate
        self.playout = call.playout_receive  #: "started" / "stopped" as the output plays

    def play(self, samples: Float32) -> None:
        """Queue float32 mono samples at 48 kHz behind what is queued."""
        self._call.rtc.post(self._call.peer.output.play, samples)

    async def clear(self) -> int:
        """Drop the queued output at once; returns the 48 kHz samples dropped."""

        async def clear() -> int:
            return int(self._call.peer.output.clear())

        return await self._call.rtc.call(clear)


class Call:
    """One live call: the peer, the channels that cross to Trio, and the sidebands."""

    def __init__(
        self, call_id: str, rtc: Any, input_rate: int, ice_servers: tuple[str, ...] = ()
    ) -> None:
        from .rtc_peer import PeerEvents, RtcPeer

        self.call_id = call_id
        self.rtc = rtc
        self.created = time.monotonic()
        self.events_send, self.events_receive = trio.open_memory_channel[str | bytes](EVENT_QUEUE)
        self.audio_send, self.audio_receive = trio.open_memory_channel[Float32](AUDIO_QUEUE)
        self.playout_send, self.playout_receive = trio.open_memory_channel[str](64)
        self.channel_open = trio.Event()
        self.scope = trio.CancelScope()
        self.sidebands: dict[int, trio.MemorySendChannel[str]] = {}
        self.ended_callbacks: list[Callable[[], None]] = []
        self.dropped_audio = 0  #: caller samples dropped because the session fell behind
        to_trio = rtc.to_trio
        self.peer = RtcPeer(
            PeerEvents(
                channel_open=lambda: to_trio(self.channel_open.set),
                message=lambda m: to_trio(self._client_event, m),
                audio=lambda a: to_trio(self._caller_audio, a),
                output_started=lambda: to_trio(self._playout, "started"),
                output_stopped=lambda: to_trio(self._playout, "stopped"),
                closed=lambda: to_trio(self.hang_up),
            ),
            input_rate=input_rate,
            ice_servers=ice_servers,
        )

    def _client_event(self, message: str | bytes) -> None:
        try:
            self.events_send.send_nowait(message)
        except trio.WouldBlock:
            log.warning("call %s: client events arrive faster than handled; ending", self.call_id)
            self.hang_up()
        except trio.ClosedResourceError:
            pass

    def _caller_audio(self, samples: Float32) -> None:
        try:
            self.audio_send.send_nowait(samples)
        except trio.WouldBlock:
            self.dropped_audio += len(samples)  # the session fell behind real time
        except trio.ClosedResourceError:
            pass

    def _playout(self, mark: str) -> None:
        try:
            self.playout_send.send_nowait(mark)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    def hang_up(self) -> None:
        """End the call (idempotent): the session stops, the peer closes, sidebands close."""
        self.scope.cancel()

    async def send(self, frame: str) -> None:
        """One server event to the data channel and every sideband."""
        self.rtc.post(self.peer.send, frame)
        for key, channel in list(self.sidebands.items()):
            try:
                channel.send_nowait(frame)
            except trio.WouldBlock:
                log.warning("call %s: a sideband stopped reading; dropping it", self.call_id)
                channel.close()
                self.sidebands.pop(key, None)
            except trio.ClosedResourceError:
                self.sidebands.pop(key, None)
        await trio.lowlevel.checkpoint()

    def join(self) -> tuple[int, trio.MemoryReceiveChannel[str]]:
        """A sideband joins: its key and the server events it will see from now on."""
        send, receive = trio.open_memory_channel[str](SIDEBAND_QUEUE)
        key = id(send)
        self.sidebands[key] = send
        return key, receive

    def leave(self, key: int) -> None:
        channel = self.sidebands.pop(key, None)
        if channel is not None:
            channel.close()


class CallPort:
    """The session's incoming events: the data channel's and the sidebands', in arrival order."""

    def __init__(self, call: Call) -> None:
        self._events = call.events_receive

    async def receive(self) -> str | bytes:
        return await self._events.receive()


class Calls:
    """The server's live calls and the nursery their sessions run in."""

    def __init__(
        self,
        pool: PipelinePool,
        metrics: Metrics,
        options: SessionOptions,
        settings: CallSettings,
        shutdown: trio.Event,
        draining: trio.Event | None = None,
        unready: trio.Event | None = None,
    ) -> None:
        self.pool, self.metrics, self.options = pool, metrics, options
        self.settings, self.shutdown = settings, shutdown
        #: set when the server drains: no new call; live ones go on
        self.draining = draining if draining is not None else trio.Event()
        #: set when the server starts to drain: readiness answers 503 (new calls are refused
        #: once ``draining`` follows, a moment later)
        self.unready = unready if unready is not None else trio.Event()
        self.live: dict[str, Call] = {}
        self._call_ended = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._rtc: Any = None

    async def all_ended(self) -> None:
        """Return once no call is live."""
        while self.live:
            await self._call_ended.park()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The calls nursery; cancelled with the server."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _loop(self) -> Any:
        """The WebRTC loop, started on the first call (aiortc loads only when used)."""
        if self._rtc is None:
            try:
                from .rtc_loop import RtcLoop
                from .rtc_peer import use_host_addresses
            except ImportError as exc:
                raise CallRefused(
                    501,
                    "webrtc_unavailable",
                    f"WebRTC needs the [webrtc] extra ({exc.name} is missing): "
                    "pip install -e '.[webrtc]'",
                    "server_error",
                ) from None
            assert self._nursery is not None
            use_host_addresses(self.settings.host_addresses)
            rtc = RtcLoop()
            await self._nursery.start(rtc.run)
            self._rtc = rtc
        return self._rtc

    async def create(
        self, offer_sdp: str, session: dict[str, Any] | None, model: str | None
    ) -> tuple[str, str]:
        """Answer an offer and start the call's session; returns (call_id, answer SDP)."""
        if self.shutdown.is_set() or self.draining.is_set():
            self.metrics.sessions_refused += 1
            raise CallRefused(
                503, "server_shutting_down", "The server is shutting down.", "server_error"
            )
        defaults = self.options.session_defaults
        if session:
            defaults = deep_merge(defaults, session)
            try:
                RealtimeConnection(session_defaults=defaults)
            except ProtocolError as exc:
                raise CallRefused(400, exc.code, exc.message, "invalid_request_error") from None
        rtc = await self._loop()
        try:
            pipeline = self.pool.acquire()
        except PoolExhausted:
            self.metrics.sessions_refused += 1
            raise CallRefused(
                503,
                "session_limit_reached",
                f"All {self.pool.size} voice session slots of this server are in use; "
                "try again later.",
                "server_error",
            ) from None
        call_id = "rtc_" + secrets.token_hex(12)
        try:
            call = Call(call_id, rtc, ENGINE_RATE, self.settings.ice_servers)
            from .rtc_peer import OfferError

            try:
                with trio.fail_after(self.settings.connect_timeout_s):
                    answer = await rtc.call(call.peer.answer, offer_sdp)
            except OfferError as exc:
                raise CallRefused(400, "invalid_offer", str(exc), "invalid_request_error") from None
            except trio.TooSlowError:
                raise CallRefused(
                    504,
                    "ice_gathering_timeout",
                    "Gathering ICE candidates took too long.",
                    "server_error",
                ) from None
        except BaseException:
            self.pool.release(pipeline)
            raise
        options = attrs.evolve(
            self.options,
            model=model or self.options.model,
            session_defaults=defaults,
            transport="webrtc",
        )
        self.live[call_id] = call
        self.metrics.calls_live += 1
        forget = rtc.on_close(call.peer.close)  # closed with the loop if the server stops first
        call.ended_callbacks.append(forget)
        assert self._nursery is not None
        self._nursery.start_soon(self._serve, call, pipeline, options)
        return call_id, answer

    async def _serve(self, call: Call, pipeline: Pipeline, options: SessionOptions) -> None:
        log.info("call %s: answered; waiting for the data channel", call.call_id)
        try:
            with call.scope:
                with trio.move_on_after(self.settings.connect_timeout_s) as waiting:
                    await call.channel_open.wait()
                if waiting.cancelled_caught:
                    log.info("call %s: never connected; releasing its slot", call.call_id)
                    return
                await self._run_session(call, pipeline, options)
        finally:
            del self.live[call.call_id]
            self.metrics.calls_live -= 1
            self._call_ended.unpark_all()
            self.pool.release(pipeline)
            for callback in call.ended_callbacks:
                callback()
            for key in list(call.sidebands):
                call.leave(key)
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                try:
                    await call.rtc.call(call.peer.close)
                except RtcLoopClosed:
                    pass  # the server is stopping; the loop closed every peer
                except Exception:
                    log.exception("call %s: closing the peer failed", call.call_id)
            log.info("call %s ended after %.1f s", call.call_id, time.monotonic() - call.created)
            if call.dropped_audio:
                log.warning(
                    "call %s: %.1f s of the caller's audio was dropped (the session fell behind)",
                    call.call_id,
                    call.dropped_audio / ENGINE_RATE,
                )

    async def _run_session(self, call: Call, pipeline: Pipeline, options: SessionOptions) -> None:
        outbox = Outbox(options.outbox_high_water, options.send_timeout_s)
        async with trio.open_nursery() as connection:
            connection.start_soon(outbox.pump, call.send)
            self.metrics.active_sessions += 1
            self.metrics.sessions_total += 1
            try:
                runner = SessionRunner(
                    CallPort(call),
                    pipeline,
                    options,
                    self.metrics,
                    outbox,
                    self.shutdown,
                    media=CallMedia(call),
                )
                await runner.run()
            finally:
                self.metrics.active_sessions -= 1
            await outbox.drain(timeout_s=1.0)
            connection.cancel_scope.cancel()

    def hang_up(self, call_id: str) -> bool:
        call = self.live.get(call_id)
        if call is None:
            return False
        call.hang_up()
        return True


async def sideband(
    call: Call,
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send_text: Callable[[str], Awaitable[None]],
) -> None:
    """A WebSocket joined to a live call: the call's events out, its own events in."""
    key, frames = call.join()
    try:
        async with trio.open_nursery() as nursery:

            async def forward() -> None:
                async for frame in frames:
                    await send_text(frame)
                nursery.cancel_scope.cancel()  # the call ended or dropped this sideband

            nursery.start_soon(forward)
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message["type"] == "websocket.receive":
                    text = message.get("text")
                    call._client_event(text if text is not None else message.get("bytes") or b"")
            nursery.cancel_scope.cancel()
    finally:
        call.leave(key)


def error_body(error: dict[str, Any]) -> str:
    return json.dumps({"error": error})
