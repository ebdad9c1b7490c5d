"""Realtime calls over WebRTC against the live server: an aiortc client posts its offer to
``/v1/realtime/calls``, talks on its microphone track and hears the answer on its audio
track, with the events on the ``oai-events`` data channel."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the [webrtc] extra is not installed")

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from openai import AsyncOpenAI

from protocol.invariants import SequenceChecker
from realtime import Pipeline, PipelinePool
from realtime.calls import CallSettings
from realtime.rtc_media import FRAME_SAMPLES, OPUS_RATE, frame_to_mono
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import LiveServer, health, live_server
from tests.support import validate_with_sdk

LOOPBACK = CallSettings(host_addresses=("127.0.0.1",), connect_timeout_s=5.0)


class Microphone(MediaStreamTrack):
    """The caller's microphone: a 300 Hz tone while ``speaking``, silence otherwise, in
    20 ms stereo frames as browsers send them."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.speaking = False
        self.pts = 0
        self._start: float | None = None

    def speak(self, seconds: float) -> None:
        self.speaking = True
        asyncio.get_running_loop().call_later(seconds, setattr, self, "speaking", False)

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self.pts += FRAME_SAMPLES
            await asyncio.sleep(max(0.0, self._start + self.pts / OPUS_RATE - loop.time()))
        t = (self.pts + np.arange(FRAME_SAMPLES)) / OPUS_RATE
        level = 0.3 if self.speaking else 0.0
        tone = (level * 32767 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2)[None, :], format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = OPUS_RATE, self.pts
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        return frame


class Caller:
    """An aiortc peer that records every event and every 20 ms of audio it hears."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.mic = Microphone()
        self.pc.addTrack(self.mic)
        self.channel = self.pc.createDataChannel("oai-events")
        self.events: list[dict[str, Any]] = []
        self.event_times: list[float] = []
        self.heard: list[tuple[float, float]] = []  #: (arrival time, RMS) per frame
        self.checker = SequenceChecker()
        self.opened = asyncio.Event()
        self.location: str | None = None
        self._pulls: set[asyncio.Task[None]] = set()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_message(self, text: str) -> None:
        event = json.loads(text)
        validate_with_sdk(event)
        self.checker.check(event)
        self.events.append(event)
        self.event_times.append(time.monotonic())

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def pull() -> None:
            while True:
                frame = await track.recv()
                samples = frame_to_mono(frame)
                self.heard.append((time.monotonic(), float(np.sqrt(np.mean(samples**2)))))

        self._pulls.add(asyncio.ensure_future(pull()))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def until(self, kind: str, timeout: float = 10.0, after: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events[after:]:
                if event["type"] == kind:
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {kind} within {timeout} s; got {self.types()}")

    async def close(self) -> None:
        for task in self._pulls:
            task.cancel()
        await self.pc.close()


def post(
    url: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return response.status, headers, response.read().decode()
    except urllib.error.HTTPError as error:
        headers = {k.lower(): v for k, v in error.headers.items()}
        return error.code, headers, error.read().decode()


async def post_offer(
    server: LiveServer, caller: Caller, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """``caller``'s offer as a raw ``application/sdp`` body to ``/v1/realtime/calls``."""
    return await asyncio.to_thread(
        post,
        f"http://127.0.0.1:{server.port}/v1/realtime/calls?model=gpt-realtime",
        (await caller.offer()).encode(),
        {"Content-Type": "application/sdp", **(headers or {})},
    )


@asynccontextmanager
async def call(server: LiveServer) -> AsyncIterator[Caller]:
    """A connected call, its data channel open and ``session.created`` received."""
    caller = Caller()
    status, headers, answer = await post_offer(server, caller)
    assert status == 201, answer
    assert headers["content-type"].startswith("application/sdp")
    caller.location = headers["location"]
    assert caller.location.startswith("/v1/realtime/calls/rtc_")
    await caller.answer(answer)
    try:
        await asyncio.wait_for(caller.opened.wait(), 10)
        await caller.until("session.created")
        yield caller
    finally:
        await caller.close()


def webrtc_server(**llm: Any) -> Any:
    pool = PipelinePool(
        [
            Pipeline(
                index=0,
                vad=FakeVAD(),
                stt=FakeSTT(),
                llm=FakeLLM(**llm),
                tts=FakeTTS(chunk_delay_s=0.02),
            )
        ],
        1,
    )
    return live_server(pool, calls=LOOPBACK)


def test_a_spoken_turn_over_webrtc() -> None:
    with webrtc_server() as server:

        async def body() -> None:
            async with call(server) as caller:
                assert caller.types()[0] == "session.created"
                caller.send(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "realtime",
                            "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                        },
                    }
                )
                await caller.until("session.updated")
                caller.mic.speak(0.8)
                done = await caller.until("response.done", timeout=15)
                assert done["response"]["status"] == "completed"
                stopped = await caller.until("output_audio_buffer.stopped", timeout=15)
                assert stopped["response_id"] == done["response"]["id"]
                kinds = caller.types()
                for kind in (
                    "input_audio_buffer.speech_started",
                    "input_audio_buffer.speech_stopped",
                    "input_audio_buffer.committed",
                    "conversation.item.input_audio_transcription.completed",
                    "response.created",
                    "output_audio_buffer.started",
                    "response.output_audio_transcript.delta",
                    "response.output_audio.done",
                ):
                    assert kind in kinds, kind
                # over WebRTC the audio travels on the track, never as events
                assert "response.output_audio.delta" not in kinds
                assert kinds.index("response.content_part.added") < kinds.index(
                    "output_audio_buffer.started"
                )
                assert kinds.index("response.done") < kinds.index("output_audio_buffer.stopped")
                # and the caller heard it: the fake TTS's tone, 80 ms per word
                loud = [rms for _, rms in caller.heard if rms > 0.05]
                assert len(loud) * 0.02 > 0.5

        asyncio.run(body())


def test_input_audio_buffer_append_is_an_error_over_webrtc() -> None:
    with webrtc_server() as server:

        async def body() -> None:
            async with call(server) as caller:
                caller.send(
                    {"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"}
                )
                error = await caller.until("error")
                assert error["error"]["event_id"] == "e1"
                assert "WebRTC" in error["error"]["message"]
                caller.send({"type": "session.update", "session": {"type": "realtime"}})
                await caller.until("session.updated")

        asyncio.run(body())


def test_barge_in_flushes_the_queued_answer_at_once() -> None:
    long_reply = " ".join(["word"] * 60)  # 60 words of 80 ms: ~5 s of answer
    with webrtc_server(reply=long_reply) as server:

        async def body() -> None:
            async with call(server) as caller:
                caller.mic.speak(0.8)
                await caller.until("output_audio_buffer.started", timeout=15)
                await asyncio.sleep(1.0)  # the answer is playing out
                mark = len(caller.events)
                caller.mic.speak(0.8)
                cleared = await caller.until("output_audio_buffer.cleared", after=mark)
                cleared_at = caller.event_times[caller.events.index(cleared)]
                await asyncio.sleep(0.5)
                # within one frame (plus the network's jitter) of the clear, silence
                after = [rms for t, rms in caller.heard if t > cleared_at + 0.1]
                assert after and max(after) < 0.01
                kinds = caller.types()[mark:]
                assert "input_audio_buffer.speech_started" in kinds
                # the interrupting speech is the next user turn and is answered
                await caller.until("input_audio_buffer.committed", after=mark, timeout=15)

        asyncio.run(body())


def test_hang_up_ends_the_call_and_frees_the_slot() -> None:
    with webrtc_server() as server:

        async def body() -> None:
            async with call(server) as caller:
                assert health(server)["pipelines_in_use"] == 1
                status, _, _ = await asyncio.to_thread(
                    post, f"http://127.0.0.1:{server.port}{caller.location}", b"", {}, "DELETE"
                )
                assert status == 200
                for _ in range(100):
                    if health(server)["pipelines_in_use"] == 0:
                        break
                    await asyncio.sleep(0.05)
                assert health(server)["pipelines_in_use"] == 0
            async with call(server) as again:  # the slot serves a new call
                assert again.types()[0] == "session.created"

        asyncio.run(body())


def test_a_call_beyond_the_pool_is_refused_with_503() -> None:
    with webrtc_server() as server:

        async def body() -> None:
            async with call(server):
                caller = Caller()
                status, _, text = await post_offer(server, caller)
                await caller.close()
                assert status == 503
                assert json.loads(text)["error"]["code"] == "session_limit_reached"

        asyncio.run(body())


def test_a_call_that_never_connects_releases_its_slot() -> None:
    settings = CallSettings(host_addresses=("127.0.0.1",), connect_timeout_s=1.0)
    pool = PipelinePool([Pipeline(0, FakeVAD(), FakeSTT(), FakeLLM(), FakeTTS())], 1)
    with live_server(pool, calls=settings) as server:

        async def body() -> None:
            caller = Caller()
            status, _, _ = await post_offer(server, caller)
            assert status == 201
            await caller.close()  # never applies the answer
            assert health(server)["pipelines_in_use"] == 1
            await asyncio.sleep(1.6)
            assert health(server)["pipelines_in_use"] == 0

        asyncio.run(body())


def test_sdk_calls_create_with_a_session_and_a_sideband_connection() -> None:
    with webrtc_server() as server:

        async def body() -> None:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            caller = Caller()
            response = await client.realtime.calls.with_raw_response.create(
                sdp=await caller.offer(),
                session={
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "output_modalities": ["audio"],
                },
            )
            assert response.status_code == 201
            call_id = response.headers["location"].rsplit("/", 1)[1]
            await caller.answer(response.content.decode())
            await asyncio.wait_for(caller.opened.wait(), 10)
            created = await caller.until("session.created")
            assert created["session"]["instructions"] == "Be brief."
            async with client.realtime.connect(call_id=call_id) as sideband:
                await sideband.session.update(
                    session={"type": "realtime", "instructions": "Be kind."}
                )
                # the update made on the sideband is seen on the data channel, and vice versa
                updated = await caller.until("session.updated")
                assert updated["session"]["instructions"] == "Be kind."
                seen = await sideband.recv()
                assert seen.type == "session.updated"
                caller.send(
                    {"type": "response.create", "response": {"output_modalities": ["text"]}}
                )
                types = []
                async for event in sideband:
                    types.append(event.type)
                    if event.type == "response.done":
                        break
                assert "response.output_text.delta" in types
            await caller.close()

        asyncio.run(body())


def test_a_call_needs_the_api_key_when_the_server_has_one() -> None:
    pool = PipelinePool([Pipeline(0, FakeVAD(), FakeSTT(), FakeLLM(), FakeTTS())], 1)
    with live_server(pool, calls=LOOPBACK, api_key="sekrit") as server:

        async def body() -> None:
            caller = Caller()
            status, _, text = await post_offer(server, caller)
            assert status == 401
            assert json.loads(text)["error"]["code"] == "invalid_api_key"
            status, _, _ = await post_offer(server, caller, {"Authorization": "Bearer sekrit"})
            assert status == 201
            await caller.close()

        asyncio.run(body())


def test_a_sideband_connection_ends_with_its_call() -> None:
    with webrtc_server() as server:

        async def body() -> None:
            import websockets

            async with call(server) as caller:
                call_id = (caller.location or "").rsplit("/", 1)[1]
                url = f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={call_id}"
                async with websockets.connect(url) as sideband:
                    status, _, _ = await asyncio.to_thread(
                        post, f"http://127.0.0.1:{server.port}{caller.location}", b"", {}, "DELETE"
                    )
                    assert status == 200
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        while True:
                            await asyncio.wait_for(sideband.recv(), 10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
                async with websockets.connect(url) as late:  # the call is gone
                    error = json.loads(await asyncio.wait_for(late.recv(), 10))
                    assert error["error"]["code"] == "call_not_found"

        asyncio.run(body())


def test_an_offer_of_another_content_type_is_a_415_with_an_openai_shaped_error() -> None:
    with webrtc_server() as server:
        url = f"http://127.0.0.1:{server.port}/v1/realtime/calls"
        for content_type in ("text/plain", "application/json"):
            status, _, text = post(url, b"v=0", {"Content-Type": content_type})
            assert status == 415
            error = json.loads(text)["error"]
            assert (error["type"], error["code"]) == (
                "invalid_request_error",
                "unsupported_content_type",
            )
        assert health(server)["pipelines_in_use"] == 0


def test_an_offer_that_cannot_be_answered_is_a_400_and_keeps_no_slot() -> None:
    with webrtc_server() as server:
        url = f"http://127.0.0.1:{server.port}/v1/realtime/calls"
        for body in (b"", b"not sdp"):
            status, _, text = post(url, body, {"Content-Type": "application/sdp"})
            assert status == 400
            assert json.loads(text)["error"]["code"] == "invalid_offer"
        assert health(server)["pipelines_in_use"] == 0
