"""Transcription sessions (``?intent=transcription``) through the live server."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable

import numpy as np
import trio
from openai import AsyncOpenAI

from engines.embedded import EmbeddedEngines
from protocol.invariants import SequenceChecker
from protocol.turns import PARTIAL_QUIET_MS
from realtime import Pipeline, PipelinePool
from realtime.audio import encode
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import (
    Client,
    connect,
    fake_pool,
    live_server,
    session,
    silence_pcm,
    tone_pcm,
)
from tests.realtime.test_embedded_voice import spoken_pcm
from tests.realtime.test_sdk import wire
from tests.support import types

TRANSCRIPTION = "?intent=transcription"


def test_server_vad_segments_are_transcribed_and_nothing_is_answered() -> None:
    pool = fake_pool()
    with live_server(pool) as server:

        async def body() -> None:
            async with connect(server, query=TRANSCRIPTION) as ws:
                client = Client(ws)
                created = await client.next()
                assert created["session"]["type"] == "transcription"
                assert created["session"]["object"] == "realtime.transcription_session"
                await client.append(silence_pcm(200) + tone_pcm(1500) + silence_pcm(600))
                events = await client.until(
                    "conversation.item.input_audio_transcription.completed", timeout=20
                )
                kinds = types(events)
                assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index(
                    "input_audio_buffer.committed"
                )
                deltas = "".join(
                    e["delta"] for e in events if e["type"].endswith("transcription.delta")
                )
                assert deltas == events[-1]["transcript"] == "what is the weather in paris"
                assert events[-1]["usage"]["type"] == "duration"
                await client.send({"type": "response.create", "event_id": "r1"})
                error = await client.next()
                assert (error["error"]["code"], error["error"]["event_id"]) == (
                    "invalid_value",
                    "r1",
                )
                assert not any(e["type"].startswith("response.") for e in client.events)

        trio.run(body)
    assert pool.pipelines[0].llm.requests == []  # type: ignore[union-attr]
    assert pool.transcription_in_use == 0


def test_g711_input_is_transcribed() -> None:
    with live_server() as server:

        async def body() -> None:
            async with session(server, query=TRANSCRIPTION) as client:
                await client.send(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "transcription",
                            "audio": {"input": {"format": {"type": "audio/pcmu"}}},
                        },
                    }
                )
                assert (await client.next())["session"]["audio"]["input"]["format"] == {
                    "type": "audio/pcmu"
                }
                t = np.arange(8_000 * 1.2) / 8_000
                tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
                audio = encode(np.zeros(1600, np.float32), "audio/pcmu")
                audio += encode(tone, "audio/pcmu") + encode(
                    np.zeros(4800, np.float32), "audio/pcmu"
                )
                for i in range(0, len(audio), 160):
                    chunk = base64.b64encode(audio[i : i + 160]).decode()
                    await client.send({"type": "input_audio_buffer.append", "audio": chunk})
                events = await client.until(
                    "conversation.item.input_audio_transcription.completed", timeout=20
                )
                started = next(e for e in events if e["type"].endswith("speech_started"))
                assert 150 <= started["audio_start_ms"] <= 260  # 200 ms of silence came first

        trio.run(body)


def test_transcription_sessions_have_their_own_capacity() -> None:
    with live_server(fake_pool(size=1, transcription_sessions=1)) as server:

        async def body() -> None:
            async with connect(server, query=TRANSCRIPTION) as first:
                assert json.loads(await first.get_message())["type"] == "session.created"
                async with connect(server, query=TRANSCRIPTION) as second:
                    refused = json.loads(await second.get_message())
                    assert refused["error"]["code"] == "session_limit_reached"
                async with connect(server) as voice:
                    created = json.loads(await voice.get_message())
                    assert created["session"]["type"] == "realtime"

        trio.run(body)


def test_sdk_transcription_session_with_manual_commits_and_logprobs() -> None:
    with live_server() as server:

        async def body() -> None:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            checker = SequenceChecker()
            async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
                created = await conn.recv()
                checker.check(wire(created))
                assert created.session.type == "transcription"
                await conn.session.update(
                    session={
                        "type": "transcription",
                        "include": ["item.input_audio_transcription.logprobs"],
                        "audio": {
                            "input": {
                                "transcription": {"model": "whisper-1", "language": "en"},
                                "turn_detection": None,
                            }
                        },
                    }
                )
                pcm = tone_pcm(800)
                for i in range(0, len(pcm), 4800):
                    await conn.input_audio_buffer.append(
                        audio=base64.b64encode(pcm[i : i + 4800]).decode()
                    )
                await conn.input_audio_buffer.commit()
                async for event in conn:
                    checker.check(wire(event))
                    if event.type == "conversation.item.input_audio_transcription.completed":
                        assert event.transcript == "what is the weather in paris"
                        assert event.logprobs and event.logprobs[0].token == "what"
                        return

        asyncio.run(body())


def test_whisper_transcribes_a_spoken_question_in_a_transcription_session(
    embedded: EmbeddedEngines, embedded_pipeline: Callable[[], Pipeline]
) -> None:
    pool = PipelinePool([embedded_pipeline()], transcription_sessions=2)
    question = spoken_pcm(embedded, "What is the capital of France?")
    with live_server(pool) as server:

        async def body() -> None:
            async with session(server, query=TRANSCRIPTION) as client:
                await client.append(silence_pcm(300) + question + silence_pcm(800))
                events = await client.until(
                    "conversation.item.input_audio_transcription.completed", timeout=60
                )
                words = re.sub(r"[^a-z ]", "", events[-1]["transcript"].lower()).split()
                assert words == ["what", "is", "the", "capital", "of", "france"]

        trio.run(body)


def test_no_partial_hypothesis_is_started_once_the_speaker_is_quiet() -> None:
    stt = FakeSTT()
    pipeline = Pipeline(0, vad=FakeVAD(), stt=stt, llm=FakeLLM(), tts=FakeTTS())
    options = {"live_interval_ms": 100, "speculative": False}
    with live_server(PipelinePool([pipeline]), **options) as server:

        async def body() -> None:
            async with session(server) as client:
                await client.update_session(
                    audio={
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
                        }
                    }
                )
                await client.append(tone_pcm(600) + silence_pcm(1000))
                await client.until("conversation.item.input_audio_transcription.completed")

        trio.run(body)
    partials = [samples for samples, partial in stt.calls if partial]
    assert len(partials) >= 3  # every 100 ms while the tone lasts
    # none covers more than PARTIAL_QUIET_MS of the silence after the tone (plus a VAD frame
    # and an append of slack), where without the rule they would go on for its 800 ms
    assert max(partials) <= (600 + PARTIAL_QUIET_MS + 32 + 20) * 16
