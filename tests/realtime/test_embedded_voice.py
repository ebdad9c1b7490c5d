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


def test_a_phone_caller_asks_and_hears_the_answer_in_ulaw(
    embedded: EmbeddedEngines, embedded_pipeline: Callable[[], Pipeline]
) -> None:
    """Twilio's side played by the stand-in: the question as 8 kHz μ-law in real time, the
    answer back as μ-law media, heard to its end, transcribed back to the words it says."""
    import asyncio
    import json

    import websockets

    from realtime.audio import decode
    from realtime.input_audio import ENGINE_RATE
    from tests.phone_standin import TwilioStandIn, TwiML, silence, ulaw

    tts = embedded.tts
    speech = np.concatenate(
        list(
            tts.synthesize(
                "What is the capital of France?", voice=None, speed=1.0, cancel=CancelToken()
            )
        )
    )
    question = ulaw(StreamingResampler(tts.sample_rate, 8_000)(speech))
    transcribed = {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    pool = PipelinePool([embedded_pipeline()])
    with live_server(pool, session_defaults=transcribed) as server:

        async def body() -> None:
            twilio = TwilioStandIn(f"http://127.0.0.1:{server.port}")
            twiml = TwiML((await twilio.ring()).text)
            await twilio.open_stream(twiml)
            url = f"ws://127.0.0.1:{server.port}/v1/realtime?call_id={twiml.parameters['call_id']}"
            async with websockets.connect(url) as sideband:
                await twilio.speak(silence(300) + question + silence(1000))
                events = []
                async with asyncio.timeout(90):
                    while not events or events[-1]["type"] != "output_audio_buffer.stopped":
                        events.append(json.loads(await sideband.recv()))
            kinds = types(events)
            completed = next(e for e in events if e["type"].endswith("transcription.completed"))
            assert normalise(completed["transcript"]) == "what is the capital of france"
            done = next(e for e in events if e["type"] == "response.done")["response"]
            assert done["status"] == "completed"
            said = done["output"][0]["content"][0]["transcript"]
            assert "response.output_audio.delta" not in kinds
            assert len(twilio.heard) == len(twilio.received) > 8_000  # over a second, all heard
            samples = StreamingResampler(8_000, ENGINE_RATE)(
                decode(bytes(twilio.received), "audio/pcmu")
            )
            heard = set(normalise(embedded.stt.transcribe(samples).text).split())
            words = set(normalise(said).split())
            assert len(heard & words) >= len(words) // 2, (heard, words)
            await twilio.hang_up()

        asyncio.run(body())
