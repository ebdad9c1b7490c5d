"""One response's engine work: the LLM's text cut into speakable pieces, each through TTS.

The session runs it for a live response and for a speculation (whose results are held until
the turn is confirmed); either way every result goes to ``emit`` in order, for the protocol
machine. The LLM and the TTS of a pipeline serve one response at a time each.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from engines.base import CancelToken, TextDelta, ToolCall, Usage
from protocol import inputs as ins
from protocol.effects import ResponsePlan

from . import audio
from .context import llm_request
from .metrics import Metrics
from .pool import Pipeline
from .speculation import SpeculativeWork, engine_limiter
from .text import SpeechChunker, clean_for_speech
from .threads import stream_in_thread


class ResponseGenerator:
    """The response pipeline of one session: LLM -> speech chunks -> TTS."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        engine_timeout_s: float,
        output_chunk_ms: int,
        mark: Callable[[str, str], None] | None = None,
    ) -> None:
        self.pipeline, self.metrics = pipeline, metrics
        self.engine_timeout_s, self.output_chunk_ms = engine_timeout_s, output_chunk_ms
        #: told each stage a response reaches (its trace: ``tracing.SessionTrace.mark``)
        self.mark = mark or (lambda work_id, stage: None)
        self._llm_lock, self._tts_lock = trio.Lock(), trio.Lock()

    async def generate(
        self,
        response_id: str,
        plan: ResponsePlan,
        token: CancelToken,
        emit: Callable[[ins.EngineResult], Awaitable[None]],
        held: SpeculativeWork | None = None,
    ) -> None:
        """LLM -> speech chunks -> TTS for ``plan``, each result handed to ``emit``.

        ``held``: the speculation this runs for. While it is held, its engine calls yield to
        live ones and only the first spoken piece is synthesised; the rest waits for its
        release, so a speculation that is dropped has cost one piece of speech at most.
        """
        started = time.monotonic()
        llm, tts = self.pipeline.llm, self.pipeline.tts
        if llm is None or tts is None:
            raise RuntimeError("a transcription session's pipeline has no LLM or TTS")
        request = llm_request(plan)
        usage = Usage(input_tokens=0, output_tokens=0)
        speak = "audio" in plan.output_modalities
        pieces_send, pieces_receive = trio.open_memory_channel[Any](32)
        chunker = SpeechChunker()
        first_output = first_piece = True
        # The LLM waits while the first piece is synthesised: on two cores the two engines
        # slow each other down, and the first audio is what the user waits for.
        first_spoken = trio.Event()

        async def send_piece(piece: str) -> None:
            nonlocal first_piece
            if first_piece:
                first_piece = False
                self.metrics.first_piece_seconds.observe(time.monotonic() - started)
            await pieces_send.send(piece)

        async def on_llm(event: Any) -> None:
            nonlocal usage, first_output
            if first_output and isinstance(event, TextDelta | ToolCall):
                first_output = False
                self.metrics.llm_first_token_seconds.observe(time.monotonic() - started)
                self.mark(response_id, "llm.first_token")
            if isinstance(event, TextDelta):
                if not speak:
                    await emit(ins.TextOut(response_id, event.text))
                    return
                pieces = chunker.push(event.text)
                for piece in pieces:
                    await send_piece(piece)
                if pieces:
                    await first_spoken.wait()
            elif isinstance(event, ToolCall):
                for piece in chunker.flush():
                    await send_piece(piece)
                await pieces_send.send(event)
            elif isinstance(event, Usage):
                usage = event

        async def produce() -> None:
            async with pieces_send:
                async with self._llm_lock:
                    self.mark(response_id, "llm.start")
                    await stream_in_thread(
                        lambda: llm.stream(request, token),
                        on_llm,
                        token,
                        limiter=engine_limiter(self.pipeline.llm_limiter, held),
                        item_timeout_s=self.engine_timeout_s,
                        buffer=1,  # so that the LLM stops at once while on_llm waits
                    )
                self.mark(response_id, "llm.end")
                for piece in chunker.flush():
                    await send_piece(piece)

        async def speak_piece(text: str) -> None:
            out_format = plan.output_format
            resample = audio.StreamingResampler(tts.sample_rate, audio.WIRE_RATE[out_format])
            transcript = text
            asked = time.monotonic()
            first_chunk = True

            async def on_audio(samples: Any) -> None:
                nonlocal transcript, first_chunk
                if first_chunk:
                    first_chunk = False
                    self.metrics.tts_first_chunk_seconds.observe(time.monotonic() - asked)
                    self.mark(response_id, "tts.first_chunk")
                for chunk in audio.to_wire_chunks(
                    resample(samples), out_format, self.output_chunk_ms
                ):
                    await emit(ins.AudioOut(response_id, chunk, transcript))
                    transcript = ""

            async with self._tts_lock:
                self.mark(response_id, "tts.start")
                await stream_in_thread(
                    lambda: tts.synthesize(text, voice=plan.voice, speed=plan.speed, cancel=token),
                    on_audio,
                    token,
                    limiter=engine_limiter(self.pipeline.tts_limiter, held),
                    item_timeout_s=self.engine_timeout_s,
                )
            if transcript:  # nothing was voiced (punctuation only): keep the text in the transcript
                await emit(ins.AudioOut(response_id, b"", transcript))

        async def consume() -> None:
            spoken = 0
            async for piece in pieces_receive:
                if isinstance(piece, ToolCall):
                    await emit(
                        ins.ToolCallOut(response_id, piece.call_id, piece.name, piece.arguments)
                    )
                elif speak and (text := clean_for_speech(piece)):
                    if held is not None and spoken:
                        await held.released.wait()
                    await speak_piece(text)
                    self.mark(response_id, "tts.end")
                    spoken += 1
                if not isinstance(piece, ToolCall):
                    first_spoken.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(consume)
        await emit(
            ins.ResponseComplete(
                response_id, usage.input_tokens, usage.output_tokens, usage.truncated
            )
        )
