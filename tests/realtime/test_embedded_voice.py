"""A spoken turn through the live server on the real embedded engines (no fakes)."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import trio

from engines.base import CancelToken
from engines.embedded import EmbeddedEngines
from realtime import Pipeline, PipelinePool
from realtime.audio import StreamingResampler, encode
from tests.realtime.harness import live_server, session, silence_pcm
from tests.support import types


def spoken_pcm(engines: EmbeddedEngines, text: str) -> bytes:
    """Piper speaking ``text`` as 24 kHz PCM16, the Realtime API's default input."""
    tts = engines.tts
    audio = np.concatenate(list(tts.synthesize(text, voice=None, speed=1.0, cancel=CancelToken())))
    return encode(StreamingResampler(tts.sample_rate, 24_000)(audio), "audio/pcm")


def normalise(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


def test_spoken_question_gets_a_spoken_answer(
    embedded: EmbeddedEngines, embedded_pipeline: Callable[[], Pipeline]
) -> None:
    pool = PipelinePool([embedded_pipeline()])
    question = spoken_pcm(embedded, "What is the capital of France?")
    with live_server(pool) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={"input": {"transcription": {"model": "whisper-1"}}}
                )
                await client.append(silence_pcm(300) + question + silence_pcm(800))
                events = await client.until("response.done", timeout=60)
                kinds = types(events)
                assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
                    "input_audio_buffer.committed"
                )
                completed = next(e for e in events if e["type"].endswith("transcription.completed"))
                assert normalise(completed["transcript"]) == "what is the capital of france"
                done = events[-1]["response"]
                assert done["status"] == "completed"
                assert done["output"][0]["content"][0]["transcript"].strip()
                audio_chunks = [e for e in events if e["type"] == "response.output_audio.delta"]
                assert len(audio_chunks) >= 5

        trio.run(body)
