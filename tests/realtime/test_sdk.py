"""The official openai SDK (async and sync) against the live server, as users run it."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from openai import AsyncOpenAI, OpenAI

from protocol.invariants import SequenceChecker
from tests.realtime.harness import fake_pool, live_server, silence_pcm, tone_pcm
from tests.realtime.test_server import WEATHER_TOOL


def wire(event: Any) -> dict[str, Any]:
    return json.loads(event.model_dump_json(exclude_unset=True))


async def collect_until_done(conn: Any, checker: SequenceChecker) -> list[Any]:
    events = []
    async for event in conn:
        checker.check(wire(event))
        events.append(event)
        if event.type == "response.done":
            return events
    raise AssertionError("connection closed before response.done")


def test_async_sdk_text_turn_and_tool_call() -> None:
    with live_server() as server:

        async def body() -> None:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            checker = SequenceChecker()
            async with client.realtime.connect(model="gpt-realtime") as conn:
                created = await conn.recv()
                checker.check(wire(created))
                assert created.type == "session.created"
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "output_modalities": ["text"],
                        "tools": [WEATHER_TOOL],
                    }
                )
                await conn.conversation.item.create(
                    item={
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "what is the weather"}],
                    }
                )
                await conn.response.create()
                events = await collect_until_done(conn, checker)
                call = events[-1].response.output[0]
                assert call.type == "function_call" and call.name == "get_weather"
                await conn.conversation.item.create(
                    item={
                        "type": "function_call_output",
                        "call_id": call.call_id,
                        "output": "sunny",
                    }
                )
                await conn.response.create()
                events = await collect_until_done(conn, checker)
                text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
                assert text == "It is sunny in Paris."

        asyncio.run(body())


def test_async_sdk_voice_turn() -> None:
    with live_server() as server:

        async def body() -> None:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            checker = SequenceChecker()
            async with client.realtime.connect(model="gpt-realtime") as conn:
                checker.check(wire(await conn.recv()))
                pcm = silence_pcm(100) + tone_pcm(1000) + silence_pcm(600)
                for i in range(0, len(pcm), 960):
                    await conn.input_audio_buffer.append(
                        audio=base64.b64encode(pcm[i : i + 960]).decode()
                    )
                events = await collect_until_done(conn, checker)
                kinds = [e.type for e in events]
                assert kinds[0] == "session.updated" or kinds[0].startswith("input_audio_buffer")
                assert "input_audio_buffer.committed" in kinds
                audio = b"".join(
                    base64.b64decode(e.delta)
                    for e in events
                    if e.type == "response.output_audio.delta"
                )
                assert len(audio) > 48_000 * 0.5  # at least half a second of 24 kHz PCM16
                assert events[-1].response.status == "completed"

        asyncio.run(body())


def test_async_sdk_barge_in_with_its_own_truncate_while_the_answer_streams() -> None:
    """The SDK user's interruption: speech over the answer, then a truncate of the item whose
    audio is still arriving at the ms the client played; no error, and the session goes on."""
    with live_server(fake_pool(token_delay_s=0.05)) as server:

        async def body() -> None:
            client = AsyncOpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
            checker = SequenceChecker()
            async with client.realtime.connect(model="gpt-realtime") as conn:
                checker.check(wire(await conn.recv()))
                await conn.response.create()
                events = []
                async for event in conn:
                    checker.check(wire(event))
                    events.append(event)
                    if event.type == "response.output_audio.delta":
                        break
                item_id = events[-1].item_id
                await conn.conversation.item.truncate(
                    item_id=item_id, content_index=0, audio_end_ms=40
                )
                pcm = tone_pcm(400) + silence_pcm(600)
                for i in range(0, len(pcm), 960):
                    await conn.input_audio_buffer.append(
                        audio=base64.b64encode(pcm[i : i + 960]).decode()
                    )
                seen = []
                async for event in conn:
                    checker.check(wire(event))
                    seen.append(event)
                    if event.type == "response.done" and event.response.status == "completed":
                        break
                kinds = [e.type for e in seen]
                assert "error" not in kinds
                truncated = next(e for e in seen if e.type == "conversation.item.truncated")
                assert (truncated.item_id, truncated.audio_end_ms) == (item_id, 40)
                cancelled = next(e for e in seen if e.type == "response.done")
                assert cancelled.response.status in ("cancelled", "completed")
                assert "input_audio_buffer.speech_started" in kinds

        asyncio.run(body())


def test_sync_sdk_text_turn() -> None:
    with live_server() as server:
        client = OpenAI(api_key="any", base_url=f"http://127.0.0.1:{server.port}/v1")
        checker = SequenceChecker()
        with client.realtime.connect(model="gpt-realtime") as conn:
            checker.check(wire(conn.recv()))
            conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                }
            )
            conn.response.create()
            text = ""
            for event in conn:
                checker.check(wire(event))
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break
        assert text == "Hello there. I am a test double, speaking slowly."
