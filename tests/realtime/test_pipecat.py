"""Pipecat's ``OpenAIRealtimeSTTService``, a third-party client, against the live server.

The service runs the way a Pipecat bot runs it: a ``Pipeline`` in a ``PipelineWorker`` under a
``WorkerRunner`` (Pipecat 1.3+ names for ``PipelineTask`` and ``PipelineRunner``), fed by a
source processor that plays a recorded utterance as 20 ms ``InputAudioRawFrame`` chunks in
real time, as an input transport delivers a microphone, on the real embedded engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from engines.embedded import EmbeddedEngines
from realtime import Pipeline as EnginePipeline
from realtime import PipelinePool
from realtime.audio import StreamingResampler, decode, encode
from tests.realtime.harness import live_server, silence_pcm
from tests.realtime.test_embedded_voice import normalise, spoken_pcm

try:
    from loguru import logger
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import (
        ErrorFrame,
        Frame,
        InputAudioRawFrame,
        InterimTranscriptionFrame,
        StartFrame,
        TranscriptionFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.audio.vad_processor import VADProcessor
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.openai.stt import OpenAIRealtimeSTTService
    from pipecat.workers.runner import WorkerRunner
except ImportError as error:
    pytest.skip(
        f"pipecat-ai[openai] (in the [test] extra) is not importable: {error}",
        allow_module_level=True,
    )

#: Pipecat's usual input rate (its Silero VAD takes 16 kHz); the service upsamples to 24 kHz
PIPELINE_RATE = 16_000
CHUNK_MS = 20


class RecordedMicrophone(FrameProcessor):
    """Plays 16 kHz PCM16 into the pipeline in real time, one 20 ms frame at a time."""

    def __init__(self, pcm: bytes) -> None:
        super().__init__()
        self._pcm = pcm
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._task = self.create_task(self._play(), "recorded_microphone")

    async def _play(self) -> None:
        step = PIPELINE_RATE * 2 * CHUNK_MS // 1000
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n, i in enumerate(range(0, len(self._pcm), step)):
            # paced against the start, so the stream keeps real time however long pushes take
            await asyncio.sleep(max(0.0, started + n * CHUNK_MS / 1000 - loop.time()))
            await self.push_frame(InputAudioRawFrame(self._pcm[i : i + step], PIPELINE_RATE, 1))
        self.finished.set()

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._task is not None:
            await self.cancel_task(self._task)


class TranscriptSink(FrameProcessor):
    """The end of the pipeline: keeps the transcription frames that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.interims: list[str] = []
        self.finals: list[str] = []
        self.final = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.finals.append(frame.text)
            self.final.set()
        elif isinstance(frame, InterimTranscriptionFrame):
            self.interims.append(frame.text)
        await self.push_frame(frame, direction)


@attrs.frozen
class BotRun:
    finals: list[str]
    interims: list[str]
    #: ErrorFrames that reached the worker and ERROR records Pipecat logged
    errors: list[str]


async def run_bot(url: str, pcm: bytes, *, server_vad: bool, timeout_s: float = 30) -> BotRun:
    """One Pipecat bot: the recording through the STT service until the recording has played
    and a final transcript has arrived, then a graceful ``EndFrame``."""
    errors: list[str] = []
    log_sink = logger.add(lambda record: errors.append(str(record)), level="ERROR")
    microphone, sink = RecordedMicrophone(pcm), TranscriptSink()
    stt = OpenAIRealtimeSTTService(
        api_key="any",
        base_url=url,
        # False: Pipecat's own VAD decides turns and the service commits on its stop frame
        turn_detection={"type": "server_vad"} if server_vad else False,
    )
    vad = [] if server_vad else [VADProcessor(vad_analyzer=SileroVADAnalyzer())]
    worker = PipelineWorker(
        Pipeline([microphone, *vad, stt, sink]),
        params=PipelineParams(audio_in_sample_rate=PIPELINE_RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )

    @worker.event_handler("on_pipeline_error")
    async def on_pipeline_error(_worker: Any, frame: ErrorFrame) -> None:
        errors.append(frame.error)

    async def end_when_transcribed() -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await microphone.finished.wait()
                await sink.final.wait()
        finally:
            await worker.stop_when_done()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    try:
        await asyncio.gather(runner.run(), end_when_transcribed())
    finally:
        logger.remove(log_sink)
    return BotRun(sink.finals, sink.interims, errors)


@pytest.fixture(scope="module")
def question(embedded: EmbeddedEngines) -> bytes:
    """Piper asking the question at 16 kHz PCM16, with 600 ms of silence before, 1.2 s after."""
    pcm24k = silence_pcm(600) + spoken_pcm(embedded, "What is the capital of France?")
    pcm24k += silence_pcm(1200)
    return encode(
        StreamingResampler(24_000, PIPELINE_RATE)(decode(pcm24k, "audio/pcm")), "audio/pcm"
    )


@pytest.mark.parametrize("server_vad", [True, False], ids=["server_vad", "local_vad"])
def test_pipecat_realtime_stt_transcribes_a_spoken_question(
    embedded_pipeline: Callable[[], EnginePipeline], question: bytes, server_vad: bool
) -> None:
    pool = PipelinePool([embedded_pipeline()], transcription_sessions=1)
    with live_server(pool) as server:
        bot = asyncio.run(run_bot(server.url, question, server_vad=server_vad))
        protocol_errors = server.metrics.protocol_errors
    assert bot.errors == []
    assert protocol_errors == 0  # every event Pipecat sent was accepted
    assert [normalise(text) for text in bot.finals] == ["what is the capital of france"]
    assert bot.interims  # the service passes each transcription delta on as an interim frame
    assert pool.transcription_in_use == 0
