"""The WebRTC layer below the session: the asyncio loop bridge, the server peer's answer,
the ``oai-events`` channel and both audio tracks, with an aiortc client on loopback."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio

pytest.importorskip("aiortc", reason="the [webrtc] extra is not installed")

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from realtime.rtc_loop import RtcLoop
from realtime.rtc_media import FRAME_SAMPLES, OPUS_RATE, frame_to_mono
from realtime.rtc_peer import (
    EVENTS_CHANNEL,
    OfferError,
    PeerEvents,
    RtcPeer,
    use_host_addresses,
)


class ToneTrack(MediaStreamTrack):
    """A caller's microphone: a 440 Hz stereo tone in 20 ms frames, as browsers send."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        await asyncio.sleep(0.02)
        t = (self.pts + np.arange(FRAME_SAMPLES)) / OPUS_RATE
        tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2)[None, :], format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = OPUS_RATE, self.pts
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        self.pts += FRAME_SAMPLES
        return frame


class Recorder:
    """The server peer's callbacks, recorded on the Trio side."""

    def __init__(self, rtc: RtcLoop) -> None:
        self.rtc = rtc
        self.messages: list[str | bytes] = []
        self.audio: list[np.ndarray] = []
        self.marks: list[str] = []
        self.opened = trio.Event()

    def events(self) -> PeerEvents:
        def later(function: Any) -> Any:
            return lambda *args: self.rtc.to_trio(function, *args)

        return PeerEvents(
            channel_open=later(self.opened.set),
            message=later(self.messages.append),
            audio=later(self.audio.append),
            output_started=later(lambda: self.marks.append("started")),
            output_stopped=later(lambda: self.marks.append("stopped")),
            closed=later(lambda: self.marks.append("closed")),
        )


@asynccontextmanager
async def rtc_loop() -> AsyncIterator[RtcLoop]:
    use_host_addresses(["127.0.0.1"])
    rtc = RtcLoop()
    async with trio.open_nursery() as nursery:
        await nursery.start(rtc.run)
        yield rtc
        nursery.cancel_scope.cancel()


async def call_with_client(rtc: RtcLoop, recorder: Recorder) -> tuple[RtcPeer, Any, Any]:
    """Negotiate a server peer with an aiortc client that sends a tone and opens the channel."""

    async def negotiate() -> tuple[RtcPeer, Any, Any]:
        client = RTCPeerConnection()
        client.addTrack(ToneTrack())
        channel = client.createDataChannel(EVENTS_CHANNEL)
        received: asyncio.Queue[av.AudioFrame] = asyncio.Queue()
        pulls: set[asyncio.Task[None]] = set()

        @client.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            async def pull() -> None:
                while True:
                    await received.put(await track.recv())

            pulls.add(asyncio.ensure_future(pull()))

        await client.setLocalDescription(await client.createOffer())
        peer = RtcPeer(recorder.events(), input_rate=16_000)
        answer = await peer.answer(client.localDescription.sdp)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return peer, (client, channel), received

    return await rtc.call(negotiate)


def test_loop_bridge_returns_results_and_raises_errors() -> None:
    async def body() -> None:
        async with rtc_loop() as rtc:

            async def double(x: int) -> int:
                await asyncio.sleep(0)
                return 2 * x

            async def fail() -> None:
                raise ValueError("inside the loop")

            assert await rtc.call(double, 21) == 42
            with pytest.raises(ValueError, match="inside the loop"):
                await rtc.call(fail)

    trio.run(body)


def test_an_offer_without_audio_is_refused() -> None:
    async def body() -> None:
        async with rtc_loop() as rtc:

            async def offer_without_audio() -> str:
                client = RTCPeerConnection()
                client.createDataChannel(EVENTS_CHANNEL)
                await client.setLocalDescription(await client.createOffer())
                peer = RtcPeer(Recorder(rtc).events(), input_rate=16_000)
                try:
                    return await peer.answer(client.localDescription.sdp)
                finally:
                    await client.close()
                    await peer.close()

            with pytest.raises(OfferError, match="no audio"):
                await rtc.call(offer_without_audio)

    trio.run(body)


def test_audio_and_events_flow_both_ways_and_clear_flushes_the_output() -> None:
    async def body() -> None:
        async with rtc_loop() as rtc:
            recorder = Recorder(rtc)
            peer, (client, channel), received = await call_with_client(rtc, recorder)
            with trio.fail_after(10):
                await recorder.opened.wait()
                # caller -> server: the tone arrives as 16 kHz mono float32
                while sum(len(a) for a in recorder.audio) < 16_000 // 2:
                    await trio.sleep(0.05)
            audio = np.concatenate(recorder.audio)
            assert audio.dtype == np.float32
            tail = audio[-4000:]
            assert 0.1 < np.sqrt(np.mean(tail**2)) < 0.4  # the 0.3-amplitude tone, downmixed
            spectrum = np.abs(np.fft.rfft(tail))
            assert abs(np.argmax(spectrum) * 16_000 / len(tail) - 440) < 10

            # events: client -> server and server -> client, raw JSON text
            got: list[str] = []

            async def exchange() -> None:
                channel.on("message", got.append)
                channel.send('{"type":"session.update"}')
                assert peer.send('{"type":"session.updated"}')

            await rtc.call(exchange)
            with trio.fail_after(5):
                while not recorder.messages or not got:
                    await trio.sleep(0.02)
            assert recorder.messages == ['{"type":"session.update"}']
            assert got == ['{"type":"session.updated"}']

            # server -> caller: 0.5 s of tone plays out, then silence; started/stopped reported
            async def drain(queue: asyncio.Queue[av.AudioFrame]) -> list[np.ndarray]:
                frames = []
                while not queue.empty():
                    frames.append(frame_to_mono(queue.get_nowait()))
                return frames

            await rtc.call(drain, received)
            t = np.arange(OPUS_RATE // 2) / OPUS_RATE
            rtc.post(peer.output.play, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
            await trio.sleep(1.2)
            heard = np.concatenate(await rtc.call(drain, received))
            loud = np.abs(heard) > 0.05
            assert 0.3 * OPUS_RATE < loud.sum() < 0.6 * OPUS_RATE
            assert np.sqrt(np.mean(heard[-4800:] ** 2)) < 0.01  # silence after it played out
            assert recorder.marks == ["started", "stopped"]

            # a clear drops what is queued at once
            rtc.post(peer.output.play, np.full(OPUS_RATE * 5, 0.2, np.float32))
            await trio.sleep(0.3)

            async def clear() -> tuple[int, int]:
                return peer.output.clear(), peer.output.queued_samples

            dropped, left = await rtc.call(clear)
            assert left == 0 and dropped > OPUS_RATE * 4
            await trio.sleep(0.1)
            assert recorder.marks == ["started", "stopped", "started", "stopped"]

            async def hang_up() -> None:
                await client.close()
                await peer.close()

            await rtc.call(hang_up)
            await trio.sleep(0.1)
            assert recorder.marks[-1] == "closed"

    trio.run(body)
