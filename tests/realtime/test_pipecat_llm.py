"""Pipecat's ``OpenAIRealtimeLLMService`` (speech to speech), unmodified, against the live server.

The service runs in a Pipecat pipeline between its context aggregators, as a Pipecat bot runs
it: a text turn, a spoken turn through server VAD, a barge-in (Pipecat's interruption, on
which the service truncates the answer whose audio is still arriving) and a tool call with
its follow-up. Each run asserts that Pipecat saw no error (Pipecat treats any ``error`` event
as fatal: the bot would stop listening) and that the server refused nothing it sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from tests.realtime.harness import LiveServer, fake_pool, live_server, silence_pcm, tone_pcm

try:
    from loguru import logger
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import (
        ErrorFrame,
        Frame,
        InputAudioRawFrame,
        InterruptionFrame,
        LLMFullResponseEndFrame,
        LLMMessagesAppendFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSTextFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.llm_service import FunctionCallParams
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
    from pipecat.workers.runner import WorkerRunner
except ImportError as error:
    pytest.skip(
        f"pipecat-ai[openai] (in the [test] extra) is not importable: {error}",
        allow_module_level=True,
    )

RATE = 24_000  #: the realtime API's audio rate, in and out
CHUNK_MS = 20


class Source(FrameProcessor):
    """The head of the pipeline: the test's script pushes frames from here once started."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self.started.set()

    async def speak(self, pcm: bytes) -> None:
        """24 kHz PCM16 as 20 ms input frames, faster than real time."""
        step = RATE * 2 * CHUNK_MS // 1000
        for i in range(0, len(pcm), step):
            await self.push_frame(InputAudioRawFrame(pcm[i : i + step], RATE, 1))
            await asyncio.sleep(0.002)


class Sink(FrameProcessor):
    """Keeps what the service produced: the answers' text and audio, turn by turn."""

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.audio = 0
        self.turns: list[tuple[str, int]] = []
        self.turn_ended = asyncio.Event()
        self.audio_arrived = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSTextFrame):
            self.text += frame.text
        elif isinstance(frame, TTSAudioRawFrame):
            self.audio += len(frame.audio)
            self.audio_arrived.set()
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.turns.append((self.text, self.audio))
            self.text, self.audio = "", 0
            self.turn_ended.set()
        await self.push_frame(frame, direction)

    async def turn(self, index: int, timeout_s: float = 20) -> tuple[str, int]:
        """The ``index``-th answer (from 0), once it has ended."""
        async with asyncio.timeout(timeout_s):
            while len(self.turns) <= index:
                self.turn_ended.clear()
                await self.turn_ended.wait()
        return self.turns[index]


@attrs.define
class Bot:
    source: Source
    sink: Sink
    llm: Any
    context: Any


Script = Callable[[Bot], Awaitable[None]]

WEATHER = FunctionSchema(
    name="get_weather",
    description="Weather of a city.",
    properties={"city": {"type": "string"}},
    required=["city"],
)


def run_bot(server: LiveServer, script: Script, *, tools: bool = False) -> list[str]:
    """Run ``script`` against a Pipecat bot on ``server``; the errors Pipecat saw."""
    errors: list[str] = []

    async def main() -> None:
        log_sink = logger.add(lambda record: errors.append(str(record)), level="ERROR")
        context = LLMContext(tools=ToolsSchema(standard_tools=[WEATHER])) if tools else LLMContext()
        aggregators = LLMContextAggregatorPair(context)
        llm = OpenAIRealtimeLLMService(
            api_key="any",
            base_url=f"ws://127.0.0.1:{server.port}/v1/realtime",
            settings=OpenAIRealtimeLLMService.Settings(model="gpt-realtime"),
        )
        source, sink = Source(), Sink()
        worker = PipelineWorker(
            Pipeline([source, aggregators.user(), llm, sink, aggregators.assistant()]),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )

        @worker.event_handler("on_pipeline_error")
        async def on_pipeline_error(_worker: Any, frame: ErrorFrame) -> None:
            errors.append(frame.error)

        async def drive() -> None:
            try:
                async with asyncio.timeout(60):
                    await source.started.wait()
                    await script(Bot(source, sink, llm, context))
            finally:
                await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        try:
            await asyncio.gather(runner.run(), drive())
        finally:
            logger.remove(log_sink)

    asyncio.run(main())
    return errors


def ask(text: str) -> Frame:
    return LLMMessagesAppendFrame(messages=[{"role": "user", "content": text}], run_llm=True)


def test_text_turn() -> None:
    async def script(bot: Bot) -> None:
        await bot.source.push_frame(ask("Say hello"))
        text, audio = await bot.sink.turn(0)
        assert text.strip() == "Hello there. I am a test double, speaking slowly."
        assert audio > 0

    with live_server() as server:
        assert run_bot(server, script) == []
        assert server.metrics.protocol_errors == 0


def test_spoken_turn_through_server_vad() -> None:
    async def script(bot: Bot) -> None:
        await bot.source.speak(tone_pcm(600) + silence_pcm(800))
        text, audio = await bot.sink.turn(0)
        assert text.strip() and audio > 0

    with live_server() as server:
        assert run_bot(server, script) == []
        assert server.metrics.protocol_errors == 0


def test_barge_in_truncates_the_streaming_answer_and_the_bot_keeps_listening() -> None:
    async def script(bot: Bot) -> None:
        await bot.source.push_frame(ask("Tell me something."))
        await asyncio.wait_for(bot.sink.audio_arrived.wait(), 20)
        await asyncio.sleep(0.1)
        # what Pipecat does when the user starts speaking over the bot
        await bot.source.push_frame(InterruptionFrame())
        await bot.source.speak(tone_pcm(600) + silence_pcm(800))
        # the interrupted answer ends (Pipecat also closes a turn or two of its own, empty,
        # on the interruption and the speech), then the spoken turn is answered in full
        index, (text, audio) = 1, await bot.sink.turn(1)
        while not audio:
            index += 1
            text, audio = await bot.sink.turn(index)
        assert text.strip() == "Hello there. I am a test double, speaking slowly."
        interrupted, _ = bot.sink.turns[0]
        assert interrupted.strip() != text.strip()  # the first answer was cut short

    with live_server(fake_pool(token_delay_s=0.05)) as server:
        assert run_bot(server, script) == []
        assert server.metrics.protocol_errors == 0


def test_tool_call_and_its_follow_up() -> None:
    calls: list[dict[str, Any]] = []

    async def get_weather(params: FunctionCallParams) -> None:
        calls.append(dict(params.arguments))
        await params.result_callback({"weather": "sunny"})

    async def script(bot: Bot) -> None:
        bot.llm.register_function("get_weather", get_weather)
        await bot.source.push_frame(ask("What is the weather in Paris?"))
        answers: list[str] = []
        while "It is sunny in Paris." not in answers and len(answers) < 3:
            answers.append((await bot.sink.turn(len(answers)))[0].strip())
        assert answers[-1] == "It is sunny in Paris."
        assert calls == [{"city": "Paris"}]

    with live_server() as server:
        assert run_bot(server, script, tools=True) == []
        assert server.metrics.protocol_errors == 0
