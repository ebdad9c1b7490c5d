"""Calls: sessions whose audio the server carries itself, on any transport.

A call is a session whose answer audio the server plays out on the caller's line (a WebRTC
peer's track, ``rtc_calls.py``; a phone call's media stream, ``phone.py``) and whose
caller audio comes from it. Its session runs in the server's calls nursery (it outlives the
request that created it) and ends on hang-up (``DELETE`` on its location, or
``POST .../hangup``), when the line closes, or when it never connects. Application servers
may join a live call with a WebSocket at ``/v1/realtime?call_id=ID`` (sideband control):
they see and send the same events as the call's own event channel, if it has one.

:class:`Call` is what every transport shares (its id, its event, audio and report channels,
its sidebands, its end); :class:`Calls` holds the live ones and runs their sessions.
"""

from __future__ import annotations

import abc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np
import trio

from protocol import inputs as ins

from .input_audio import ENGINE_RATE
from .metrics import Metrics
from .outbox import Outbox
from .pool import Pipeline, PipelinePool, PoolExhausted
from .ports import CallMedia, SessionOptions
from .session import SessionRunner

log = logging.getLogger("realtime.calls")

#: frames queued for one sideband WebSocket before it counts as not reading
SIDEBAND_QUEUE = 256
#: caller audio chunks (20 ms each) queued for the session before the oldest are dropped
AUDIO_QUEUE = 100
#: client events queued from the call's event channel and sidebands
EVENT_QUEUE = 256
#: reports from the line (playout, key presses) queued for the session
REPORT_QUEUE = 64

Float32 = np.ndarray


class CallRefused(Exception):
    """A call cannot be created or changed; ``status`` and ``error`` are the HTTP answer."""

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
    connect_timeout_s: float = 20.0  #: a call whose line never connects ends after this


class Call(abc.ABC):
    """One live call: the channels that cross to its session, and the sidebands.

    The transport reports into it from the Trio thread: :meth:`client_event` (a client event
    from the line's own event channel or a sideband), :meth:`caller_audio` (float32 mono at
    ``ENGINE_RATE``), :meth:`report` (what happened on the line: playout started or stopped,
    a key pressed), and sets :attr:`connected` once the line carries audio.
    """

    #: the session's transport (``protocol.connection.TRANSPORTS``)
    transport = "webrtc"

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.created = time.monotonic()
        self.events_send, self.events_receive = trio.open_memory_channel[str | bytes](EVENT_QUEUE)
        self.audio_send, self.audio_receive = trio.open_memory_channel[Float32](AUDIO_QUEUE)
        reports = trio.open_memory_channel[ins.EngineResult](REPORT_QUEUE)
        self.reports_send, self.reports_receive = reports
        self.connected = trio.Event()  #: the line is up: the session starts
        self.scope = trio.CancelScope()
        self.sidebands: dict[int, trio.MemorySendChannel[str]] = {}
        self.ended_callbacks: list[Callable[[], None]] = []
        self.ended = trio.Event()
        self.dropped_audio = 0  #: caller samples dropped because the session fell behind

    # --- the transport's side ------------------------------------------------------------

    def client_event(self, message: str | bytes) -> None:
        try:
            self.events_send.send_nowait(message)
        except trio.WouldBlock:
            log.warning("call %s: client events arrive faster than handled; ending", self.call_id)
            self.hang_up()
        except trio.ClosedResourceError:
            pass

    def caller_audio(self, samples: Float32) -> None:
        try:
            self.audio_send.send_nowait(samples)
        except trio.WouldBlock:
            self.dropped_audio += len(samples)  # the session fell behind real time
        except trio.ClosedResourceError:
            pass

    def report(self, result: ins.EngineResult) -> None:
        try:
            self.reports_send.send_nowait(result)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass

    def hang_up(self) -> None:
        """End the call (idempotent): the session stops, the line closes, sidebands close."""
        self.scope.cancel()

    # --- what each transport provides ----------------------------------------------------

    @abc.abstractmethod
    def media(self) -> CallMedia:
        """The session's side of the call's audio."""

    def configure(self, options: SessionOptions) -> SessionOptions:
        """The session's options as the call was set up (a phone call's accept gives its
        session config only once it is answered)."""
        return options

    def deliver(self, frame: str) -> None:  # noqa: B027 (optional: a line may have none)
        """One server event to the line's own event channel (a phone line has none)."""

    async def close(self) -> None:
        """Close the line once the session has ended (runs shielded, bounded)."""
        await trio.lowlevel.checkpoint()

    # --- events and sidebands ------------------------------------------------------------

    async def send(self, frame: str) -> None:
        """One server event to the line's event channel and every sideband."""
        self.deliver(frame)
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
    """The session's incoming events: the line's and the sidebands', in arrival order."""

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
        self.nursery: trio.Nursery | None = None

    async def all_ended(self) -> None:
        """Return once no call is live."""
        while self.live:
            await self._call_ended.park()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The calls nursery; cancelled with the server."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def check_open(self) -> None:
        """Refuse a new call while the server drains or stops."""
        if self.shutdown.is_set() or self.draining.is_set():
            self.metrics.sessions_refused += 1
            raise CallRefused(
                503, "server_shutting_down", "The server is shutting down.", "server_error"
            )

    def acquire(self) -> Pipeline:
        """A pipeline for a new call, or ``session_limit_reached``."""
        try:
            return self.pool.acquire()
        except PoolExhausted:
            self.metrics.sessions_refused += 1
            raise CallRefused(
                503,
                "session_limit_reached",
                f"All {self.pool.size} voice session slots of this server are in use; "
                "try again later.",
                "server_error",
            ) from None

    def start(
        self,
        call: Call,
        pipeline: Pipeline,
        options: SessionOptions,
        connect_timeout_s: float | None = None,
    ) -> None:
        """The call is live: it holds ``pipeline`` until it ends; its session starts once its
        line connects (within ``connect_timeout_s``, the settings' by default)."""
        self.live[call.call_id] = call
        self.metrics.calls_live += 1
        if connect_timeout_s is None:
            connect_timeout_s = self.settings.connect_timeout_s
        assert self.nursery is not None
        self.nursery.start_soon(self._serve, call, pipeline, options, connect_timeout_s)

    async def _serve(
        self, call: Call, pipeline: Pipeline, options: SessionOptions, timeout_s: float
    ) -> None:
        log.info("call %s (%s): waiting for the line to connect", call.call_id, call.transport)
        try:
            with call.scope:
                with trio.move_on_after(timeout_s) as waiting:
                    await call.connected.wait()
                if waiting.cancelled_caught:
                    log.info("call %s: never connected; releasing its slot", call.call_id)
                    return
                await self._run_session(call, pipeline, call.configure(options))
        finally:
            del self.live[call.call_id]
            self.metrics.calls_live -= 1
            self._call_ended.unpark_all()
            self.pool.release(pipeline)
            call.ended.set()
            for callback in call.ended_callbacks:
                callback()
            for key in list(call.sidebands):
                call.leave(key)
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                try:
                    await call.close()
                except Exception:
                    log.exception("call %s: closing the line failed", call.call_id)
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
                    media=call.media(),
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
                    call.client_event(text if text is not None else message.get("bytes") or b"")
            nursery.cancel_scope.cancel()
    finally:
        call.leave(key)


def error_body(error: dict[str, Any]) -> str:
    return json.dumps({"error": error})
