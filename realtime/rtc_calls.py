"""Realtime calls over WebRTC: ``POST /v1/realtime/calls`` answers an SDP offer with a call.

The call's events travel on the peer's ``oai-events`` data channel, its audio on the media
tracks (``rtc_peer.py``, in the WebRTC loop of ``rtc_loop.py``); the session and sidebands
are every call's (``calls.py``).
"""

from __future__ import annotations

import secrets
from typing import Any

import attrs
import numpy as np
import trio

from protocol import ProtocolError, RealtimeConnection
from protocol import inputs as ins
from protocol.session import deep_merge

from .calls import Call, CallRefused, Calls
from .input_audio import ENGINE_RATE
from .ports import CallMedia
from .rtc_loop import RtcLoopClosed

PLAYOUT_RATE = 48_000  #: Hz of a WebRTC call's output track


class RtcMedia:
    """The session's side of a WebRTC call's audio (Trio side)."""

    rate = PLAYOUT_RATE

    def __init__(self, call: RtcCall) -> None:
        self._call = call
        self.audio_in = call.audio_receive  #: float32 mono chunks at the input rate
        self.reports = call.reports_receive  #: playout started / stopped as the output plays

    def play(self, samples: np.ndarray) -> None:
        """Queue float32 mono samples at 48 kHz behind what is queued."""
        self._call.rtc.post(self._call.peer.output.play, samples)

    async def clear(self) -> int:
        """Drop the queued output at once; returns the 48 kHz samples dropped."""

        async def clear() -> int:
            return int(self._call.peer.output.clear())

        return await self._call.rtc.call(clear)


class RtcCall(Call):
    """A call on a WebRTC peer: the data channel carries its events, the tracks its audio."""

    transport = "webrtc"

    def __init__(
        self, call_id: str, rtc: Any, input_rate: int, ice_servers: tuple[str, ...] = ()
    ) -> None:
        from .rtc_peer import PeerEvents, RtcPeer

        super().__init__(call_id)
        self.rtc = rtc
        to_trio = rtc.to_trio
        self.peer = RtcPeer(
            PeerEvents(
                channel_open=lambda: to_trio(self.connected.set),
                message=lambda m: to_trio(self.client_event, m),
                audio=lambda a: to_trio(self.caller_audio, a),
                output_started=lambda: to_trio(self.report, ins.PlayoutStarted()),
                output_stopped=lambda: to_trio(self.report, ins.PlayoutStopped()),
                closed=lambda: to_trio(self.hang_up),
            ),
            input_rate=input_rate,
            ice_servers=ice_servers,
        )

    def media(self) -> CallMedia:
        return RtcMedia(self)

    def deliver(self, frame: str) -> None:
        self.rtc.post(self.peer.send, frame)

    async def close(self) -> None:
        try:
            await self.rtc.call(self.peer.close)
        except RtcLoopClosed:
            pass  # the server is stopping; the loop closed every peer


class WebRtcCalls:
    """Creates WebRTC calls: the WebRTC loop (started on the first call: aiortc loads only
    when used), the offer's answer, and the call handed to :class:`Calls`."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self._rtc: Any = None

    async def _loop(self) -> Any:
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
            assert self.calls.nursery is not None
            use_host_addresses(self.calls.settings.host_addresses)
            rtc = RtcLoop()
            await self.calls.nursery.start(rtc.run)
            self._rtc = rtc
        return self._rtc

    async def create(
        self, offer_sdp: str, session: dict[str, Any] | None, model: str | None
    ) -> tuple[str, str]:
        """Answer an offer and start the call's session; returns (call_id, answer SDP)."""
        calls = self.calls
        calls.check_open()
        defaults = calls.options.session_defaults
        if session:
            defaults = deep_merge(defaults, session)
            try:
                RealtimeConnection(session_defaults=defaults)
            except ProtocolError as exc:
                raise CallRefused(400, exc.code, exc.message, "invalid_request_error") from None
        rtc = await self._loop()
        pipeline = calls.acquire()
        call_id = "rtc_" + secrets.token_hex(12)
        call: RtcCall | None = None
        try:
            call = RtcCall(call_id, rtc, ENGINE_RATE, calls.settings.ice_servers)
            from .rtc_peer import OfferError

            try:
                with trio.fail_after(calls.settings.connect_timeout_s):
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
            calls.pool.release(pipeline)
            if call is not None:  # its peer connection was made: close it
                with trio.CancelScope(shield=True), trio.move_on_after(3):
                    await call.close()
            raise
        options = attrs.evolve(
            calls.options,
            model=model or calls.options.model,
            session_defaults=defaults,
            transport="webrtc",
        )
        forget = rtc.on_close(call.peer.close)  # closed with the loop if the server stops first
        call.ended_callbacks.append(forget)
        calls.start(call, pipeline, options)
        return call_id, answer
